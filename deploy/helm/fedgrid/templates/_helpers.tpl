{{- define "fedgrid.fullname" -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}

{{- define "fedgrid.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "fedgrid.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* Bootstrap addresses: the given ones, else this release's network peer. */}}
{{- define "fedgrid.bootstrap" -}}
{{- if .bootstrap -}}
{{- join "," .bootstrap -}}
{{- else if .root.Values.network.peerID -}}
/dns4/{{ include "fedgrid.fullname" .root }}-network/tcp/{{ .root.Values.network.port }}/p2p/{{ .root.Values.network.peerID }}
{{- end -}}
{{- end -}}
