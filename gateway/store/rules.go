package store

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4"
)

const prefixRule = "rule/"

// Rule is an administrator's approval rule: it approves the release of a
// DP-SGD result without a person when everything it names matches. It
// matches only on what the data owner and the administrators control (the
// dataset's tags, the requester's role, the epsilon the gateway computed),
// never on names the requester chose (plan or job names). A plan without
// DP-SGD is never approved by a rule.
type Rule struct {
	ID string `json:"id"`
	// Tags: the dataset must carry every one of these owner-set tags (at least one).
	Tags []string `json:"tags"`
	// Roles: the requester's role must be one of these (empty: any role).
	Roles []string `json:"roles,omitempty"`
	// MaxEpsilonMicroEps: the release may cost at most this much.
	MaxEpsilonMicroEps int64 `json:"max_epsilon_micro_eps"`
	// Quota: the rule approves at most this many releases; Used counts them.
	Quota int `json:"quota"`
	Used  int `json:"used"`
	// ExpiresAt: the rule approves nothing from then on (zero: never expires).
	ExpiresAt time.Time `json:"expires_at,omitzero"`
	Disabled  bool      `json:"disabled,omitempty"`
	Note      string    `json:"note,omitempty"`
	CreatedBy string    `json:"created_by,omitempty"`
	CreatedAt time.Time `json:"created_at"`
}

// Rule limits.
const (
	MaxRuleQuota = 1_000_000
	maxRuleNote  = 500
)

func validateRule(r *Rule) error {
	r.Tags = NormalizeTags(r.Tags)
	if len(r.Tags) == 0 {
		return invalid("tags", "at least one dataset tag is required")
	}
	if len(r.Tags) > MaxTags {
		return invalid("tags", "more than %d", MaxTags)
	}
	r.Roles = slices.Compact(slices.Sorted(slices.Values(r.Roles)))
	for _, role := range r.Roles {
		if strings.TrimSpace(role) == "" {
			return invalid("roles", "empty role name")
		}
	}
	if r.MaxEpsilonMicroEps <= 0 {
		return invalid("max_epsilon", "must be positive")
	}
	if r.Quota < 1 || r.Quota > MaxRuleQuota {
		return invalid("quota", "must be between 1 and %d", MaxRuleQuota)
	}
	if r.Used < 0 {
		return invalid("used", "must not be negative")
	}
	if len(r.Note) > maxRuleNote {
		return invalid("note", "longer than %d bytes", maxRuleNote)
	}
	return nil
}

// CreateRule stores a new rule (ID, Used and CreatedAt are set here).
func (s *Store) CreateRule(r Rule, actor string) (*Rule, error) {
	r.ID, r.Used, r.CreatedBy, r.CreatedAt = newID(), 0, actor, s.now().UTC()
	if err := validateRule(&r); err != nil {
		return nil, err
	}
	err := s.update(func(txn *badger.Txn) error {
		for _, role := range r.Roles {
			if _, err := getRole(txn, role); err != nil {
				return invalid("roles", "no role %q", role)
			}
		}
		if err := putJSON(txn, prefixRule+r.ID, r); err != nil {
			return err
		}
		return s.audit(txn, AuditEvent{Actor: actor, Action: "rule.create", Target: "rule/" + r.ID, Detail: ruleDetail(&r)})
	})
	if err != nil {
		return nil, err
	}
	return &r, nil
}

func ruleDetail(r *Rule) map[string]any {
	return map[string]any{"tags": r.Tags, "roles": r.Roles, "max_epsilon_micro_eps": r.MaxEpsilonMicroEps, "quota": r.Quota,
		"used": r.Used, "expires_at": r.ExpiresAt, "disabled": r.Disabled}
}

// GetRule returns one rule, or ErrNotFound.
func (s *Store) GetRule(id string) (*Rule, error) {
	var r Rule
	if err := s.view(func(txn *badger.Txn) error { return getJSON(txn, prefixRule+id, &r) }); err != nil {
		return nil, fmt.Errorf("%w: rule %s", err, id)
	}
	return &r, nil
}

// Rules lists the rules, oldest first.
func (s *Store) Rules() ([]*Rule, error) {
	var out []*Rule
	err := s.view(func(txn *badger.Txn) error {
		var err error
		out, err = rulesTxn(txn)
		return err
	})
	return out, err
}

func rulesTxn(txn *badger.Txn) ([]*Rule, error) {
	out, err := scanAll[Rule](txn, prefixRule)
	slices.SortStableFunc(out, func(a, b *Rule) int {
		if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out, err
}

// UpdateRule lets fn change a rule (not its ID, Used, CreatedBy or CreatedAt), validated and audited.
func (s *Store) UpdateRule(id, actor string, fn func(*Rule)) (*Rule, error) {
	var out Rule
	err := s.update(func(txn *badger.Txn) error {
		var r Rule
		if err := getJSON(txn, prefixRule+id, &r); err != nil {
			return fmt.Errorf("%w: rule %s", err, id)
		}
		keep := r
		fn(&r)
		r.ID, r.Used, r.CreatedBy, r.CreatedAt = keep.ID, keep.Used, keep.CreatedBy, keep.CreatedAt
		if err := validateRule(&r); err != nil {
			return err
		}
		for _, role := range r.Roles {
			if _, err := getRole(txn, role); err != nil {
				return invalid("roles", "no role %q", role)
			}
		}
		if err := putJSON(txn, prefixRule+r.ID, r); err != nil {
			return err
		}
		out = r
		return s.audit(txn, AuditEvent{Actor: actor, Action: "rule.update", Target: "rule/" + r.ID, Detail: ruleDetail(&r)})
	})
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// DeleteRule removes a rule; decisions it made stay in the history.
func (s *Store) DeleteRule(id, actor string) error {
	return s.update(func(txn *badger.Txn) error {
		if ok, err := exists(txn, prefixRule+id); err != nil {
			return err
		} else if !ok {
			return fmt.Errorf("%w: rule %s", ErrNotFound, id)
		}
		if err := txn.Delete([]byte(prefixRule + id)); err != nil {
			return err
		}
		return s.audit(txn, AuditEvent{Actor: actor, Action: "rule.delete", Target: "rule/" + id})
	})
}

// Matches reports whether the rule approves a release of a DP-SGD job
// costing epsMicro by a user of role on a dataset carrying tags, at now.
func (r *Rule) Matches(tags []string, role string, dp bool, epsMicro int64, now time.Time) bool {
	if r.Disabled || !dp || epsMicro > r.MaxEpsilonMicroEps || r.Used >= r.Quota {
		return false
	}
	if !r.ExpiresAt.IsZero() && !now.Before(r.ExpiresAt) {
		return false
	}
	if len(r.Roles) > 0 && !slices.Contains(r.Roles, role) {
		return false
	}
	if len(r.Tags) == 0 {
		return false
	}
	for _, t := range r.Tags {
		if !slices.Contains(tags, t) {
			return false
		}
	}
	return true
}

// matchRule returns the oldest rule approving j's release on d, or nil.
func (s *Store) matchRule(txn *badger.Txn, j *Job, d *Dataset, now time.Time) (*Rule, error) {
	u, err := getUser(txn, j.UserID)
	if errors.Is(err, ErrNotFound) {
		return nil, nil // the account is gone: a person decides
	}
	if err != nil {
		return nil, err
	}
	rules, err := rulesTxn(txn)
	if err != nil {
		return nil, err
	}
	for _, r := range rules {
		if r.Matches(d.Tags, u.Role, j.DP, j.EpsilonMicroEps, now) {
			return r, nil
		}
	}
	return nil, nil
}
