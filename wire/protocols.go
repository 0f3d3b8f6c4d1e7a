package wire

import "time"

// Caller says who may call a protocol.
type Caller int

const (
	// CallerAnyone: no identity check; the request carries its own
	// credential (a join token) or reveals nothing private (the catalog).
	CallerAnyone Caller = iota + 1
	// CallerNode: a node this gateway enrolled.
	CallerNode
	// CallerScientist: a peer bound to an account whose role may make data
	// requests (can_make_data_requests).
	CallerScientist
	// CallerGateway: the gateway that enrolled this node (protocols a node
	// serves).
	CallerGateway
)

func (c Caller) String() string {
	switch c {
	case CallerAnyone:
		return "anyone"
	case CallerNode:
		return "enrolled node"
	case CallerScientist:
		return "data scientist"
	case CallerGateway:
		return "the node's gateway"
	}
	return "nobody"
}

// Descriptor is everything about one stream protocol but its Go types: its
// name (p2p.ProtocolID makes "/fedgrid/<network>/<name>/1.0.0"), the size
// limits of a request and a response, the deadline of the whole exchange,
// and who may call. Servers and clients both take their limits from it.
type Descriptor struct {
	Name        string
	MaxRequest  int
	MaxResponse int
	Timeout     time.Duration
	Caller      Caller
	// CheckFirst: the caller is checked before the request is read, so that
	// a peer not allowed to send a large request never has it held in memory.
	CheckFirst bool
	// Idle, for a protocol whose response is a stream of frames, is the
	// longest wait for the next bytes; MaxResponse then bounds one frame.
	Idle time.Duration
}

// Protocol is a Descriptor with its request and response types: a server
// or client using the protocol with other types does not compile.
type Protocol[Req, Resp any] struct{ Descriptor }

func define[Req, Resp any](d Descriptor) Protocol[Req, Resp] { return Protocol[Req, Resp]{d} }

func small(name string, timeout time.Duration, who Caller) Descriptor {
	return Descriptor{Name: name, MaxRequest: MaxSmall, MaxResponse: MaxSmall, Timeout: timeout, Caller: who}
}

// Catalog: anyone -> gateway: datasets with tags, hosted models.
func Catalog() Protocol[CatalogRequest, CatalogResponse] {
	return define[CatalogRequest, CatalogResponse](Descriptor{Name: ProtoCatalog, MaxRequest: MaxSmall, MaxResponse: MaxCatalog, Timeout: 10 * time.Second, Caller: CallerAnyone})
}

// Enroll: node -> gateway: join with a token (or as a node already known).
func Enroll() Protocol[EnrollRequest, EnrollResponse] {
	return define[EnrollRequest, EnrollResponse](small(ProtoEnroll, 10*time.Second, CallerAnyone))
}

// Claim: enrolled node -> gateway: ask for the lease of an offered job.
func Claim() Protocol[ClaimRequest, ClaimResponse] {
	return define[ClaimRequest, ClaimResponse](small(ProtoClaim, 10*time.Second, CallerNode))
}

// Fetch: leased node -> gateway: the plan and the data shard.
func Fetch() Protocol[FetchRequest, FetchResponse] {
	return define[FetchRequest, FetchResponse](Descriptor{Name: ProtoFetch, MaxRequest: MaxSmall, MaxResponse: MaxShard, Timeout: 5 * time.Minute, Caller: CallerNode})
}

// Open: leased node -> gateway: the plan, the starting weights and a
// description of the data (whose key a node's shard cache may hold).
func Open() Protocol[FetchRequest, OpenResponse] {
	return define[FetchRequest, OpenResponse](Descriptor{Name: ProtoOpen, MaxRequest: MaxSmall, MaxResponse: MaxPlan + MaxModel, Timeout: 2 * time.Minute, Caller: CallerNode})
}

// Data: leased node -> gateway: the rows job/open described, as a stream of
// frames (dataset/frames) of at most MaxFrame bytes each, no more than
// Idle apart, within Timeout in all.
func Data() Protocol[DataRequest, Frames] {
	return define[DataRequest, Frames](Descriptor{Name: ProtoData, MaxRequest: MaxSmall, MaxResponse: MaxFrame, Timeout: 2 * time.Hour, Idle: time.Minute, Caller: CallerNode})
}

// Heartbeat: leased node -> gateway: progress and lease renewal.
func Heartbeat() Protocol[HeartbeatRequest, HeartbeatResponse] {
	return define[HeartbeatRequest, HeartbeatResponse](small(ProtoHeartbeat, 10*time.Second, CallerNode))
}

// Result: leased node -> gateway: the trained model, or why training failed.
func Result() Protocol[ResultRequest, Ack] {
	return define[ResultRequest, Ack](Descriptor{Name: ProtoResult, MaxRequest: MaxModel, MaxResponse: MaxSmall, Timeout: 2 * time.Minute, Caller: CallerNode, CheckFirst: true})
}

// Ping: enrolled node -> gateway: alive, free slots.
func Ping() Protocol[PingRequest, PingResponse] {
	return define[PingRequest, PingResponse](small(ProtoPing, 10*time.Second, CallerNode))
}

// Submit: data scientist -> gateway: a plan for a dataset.
func Submit() Protocol[SubmitRequest, JobInfo] {
	return define[SubmitRequest, JobInfo](Descriptor{Name: ProtoSubmit, MaxRequest: MaxPlan + MaxSmall, MaxResponse: MaxSmall, Timeout: 30 * time.Second, Caller: CallerScientist, CheckFirst: true})
}

// Job: data scientist -> gateway: one of the caller's jobs.
func Job() Protocol[JobRequest, JobInfo] {
	return define[JobRequest, JobInfo](Descriptor{Name: ProtoJob, MaxRequest: MaxSmall, MaxResponse: MaxJobInfo, Timeout: 10 * time.Second, Caller: CallerScientist})
}

// Jobs: data scientist -> gateway: the caller's own jobs, newest first.
func Jobs() Protocol[JobsQuery, JobList] {
	return define[JobsQuery, JobList](Descriptor{Name: ProtoJobs, MaxRequest: MaxSmall, MaxResponse: MaxCatalog, Timeout: 10 * time.Second, Caller: CallerScientist})
}

// Cancel: data scientist -> gateway: cancel one of the caller's jobs.
func Cancel() Protocol[JobRequest, JobInfo] {
	return define[JobRequest, JobInfo](Descriptor{Name: ProtoCancel, MaxRequest: MaxSmall, MaxResponse: MaxJobInfo, Timeout: 10 * time.Second, Caller: CallerScientist})
}

// Model: data scientist -> gateway: a job's released model.
func Model() Protocol[JobRequest, ModelResponse] {
	return define[JobRequest, ModelResponse](Descriptor{Name: ProtoModel, MaxRequest: MaxSmall, MaxResponse: MaxModel, Timeout: 2 * time.Minute, Caller: CallerScientist})
}

// Request: data scientist -> gateway: ask for budget or a permission.
func Request() Protocol[RequestCreate, RequestInfo] {
	return define[RequestCreate, RequestInfo](small(ProtoRequest, 10*time.Second, CallerScientist))
}

// Requests: data scientist -> gateway: the caller's own requests.
func Requests() Protocol[RequestsQuery, RequestList] {
	return define[RequestsQuery, RequestList](Descriptor{Name: ProtoRequests, MaxRequest: MaxSmall, MaxResponse: MaxCatalog, Timeout: 10 * time.Second, Caller: CallerScientist})
}

// Withdraw: data scientist -> gateway: take back a pending request.
func Withdraw() Protocol[RequestWithdraw, RequestInfo] {
	return define[RequestWithdraw, RequestInfo](small(ProtoWithdraw, 10*time.Second, CallerScientist))
}

// Query: data scientist -> gateway: a differentially private statistic.
func Query() Protocol[QueryRequest, QueryResponse] {
	return define[QueryRequest, QueryResponse](small(ProtoQuery, time.Minute, CallerScientist))
}

// Protocols lists the descriptor of every stream protocol a gateway serves.
func Protocols() []Descriptor {
	return append([]Descriptor{
		Catalog().Descriptor, Enroll().Descriptor, Claim().Descriptor, Fetch().Descriptor, Open().Descriptor, Data().Descriptor, Heartbeat().Descriptor,
		Result().Descriptor, Ping().Descriptor, Submit().Descriptor, Job().Descriptor, Jobs().Descriptor, Cancel().Descriptor,
		Model().Descriptor, Request().Descriptor, Requests().Descriptor, Withdraw().Descriptor, Query().Descriptor,
	}, FedProtocols()...)
}
