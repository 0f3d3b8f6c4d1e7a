package service

import (
	"github.com/fedgrid/fedgrid/gateway/store"
)

// AuditLog is what an actor reads of the audit log.
type AuditLog struct {
	Entries []*store.AuditEntry
	// Withheld tells the actor what is withheld from them and why, "" when
	// nothing is (see auditSight).
	Withheld string
}

// Audit lists audit entries matching f, in chain order, as the actor may
// read them (can_edit_settings; auditSight withholds what would tell a
// requester the outcome of their own job under review).
func (s *Service) Audit(a Actor, f store.AuditFilter) (*AuditLog, error) {
	if !a.Can(store.PermEditSettings) {
		return nil, Errorf(Forbidden, "reading the audit log needs %s", store.PermEditSettings)
	}
	as, err := s.auditSight(a)
	if err != nil {
		return nil, err
	}
	if as.cut && f.After >= as.through {
		return &AuditLog{Entries: []*store.AuditEntry{}, Withheld: as.withheld()}, nil
	}
	if as.cut && (f.Upto == 0 || f.Upto > as.through) {
		f.Upto = as.through
	}
	limit := f.Limit
	if len(as.targets) > 0 {
		f.Limit = 0 // some entries are left out below
	}
	es, err := s.st.Audit(f)
	if err != nil {
		return nil, err
	}
	out := []*store.AuditEntry{}
	for _, e := range es {
		if !as.shows(e) {
			continue
		}
		out = append(out, e)
		if limit > 0 && len(out) >= limit {
			break
		}
	}
	return &AuditLog{Entries: out, Withheld: as.withheld()}, nil
}

// AuditCheck is the result of checking the audit chain.
type AuditCheck struct {
	// Entries: how many entries the actor may read were checked (the whole
	// chain is checked; its length is not told to a requester whose job is
	// under review, since it would time the outcome).
	Entries  int
	Withheld string
}

// VerifyAudit checks the whole audit chain (can_edit_settings).
func (s *Service) VerifyAudit(a Actor) (*AuditCheck, error) {
	if !a.Can(store.PermEditSettings) {
		return nil, Errorf(Forbidden, "checking the audit log needs %s", store.PermEditSettings)
	}
	as, err := s.auditSight(a)
	if err != nil {
		return nil, err
	}
	n, err := s.st.VerifyAudit()
	if err != nil {
		return nil, err // store.ErrAuditBroken names the first bad entry
	}
	if as.cut && uint64(n) > as.through {
		n = int(as.through)
	}
	return &AuditCheck{Entries: n, Withheld: as.withheld()}, nil
}
