package store

import (
	"errors"
	"fmt"
	"time"

	"github.com/dgraph-io/badger/v4"
)

const prefixLedger = "ledger/"

// ErrInsufficientBudget is returned when a reservation or spend exceeds the
// budget available.
var ErrInsufficientBudget = errors.New("store: insufficient privacy budget")

// Movement kinds.
const (
	MoveGrant   = "grant"   // budget added (or, negative, taken away) by an administrator
	MoveReserve = "reserve" // available -> reserved
	MoveCommit  = "commit"  // reserved -> spent
	MoveRefund  = "refund"  // reserved -> available
	MoveSpend   = "spend"   // available -> spent in one step
)

// Movement is one entry of the budget ledger.
type Movement struct {
	ID             string    `json:"id"`
	UserID         string    `json:"user_id"`
	DatasetID      string    `json:"dataset_id,omitempty"`
	Kind           string    `json:"kind"`
	AmountMicroEps int64     `json:"amount_micro_eps"`
	ReservationID  string    `json:"reservation_id,omitempty"`
	Actor          string    `json:"actor,omitempty"`
	Reason         string    `json:"reason,omitempty"`
	Time           time.Time `json:"time"`
}

// recordMovement appends m to the ledger and the audit chain inside txn.
func (s *Store) recordMovement(txn *badger.Txn, m Movement) error {
	m.Time = s.now().UTC()
	if m.ID == "" {
		m.ID = newID()
	}
	key := fmt.Sprintf("%s%s/%020d-%s", prefixLedger, m.UserID, m.Time.UnixNano(), m.ID)
	if err := putJSON(txn, key, m); err != nil {
		return err
	}
	return s.audit(txn, AuditEvent{Actor: m.Actor, Action: "budget." + m.Kind, Target: "user/" + m.UserID,
		Detail: map[string]any{"amount_micro_eps": m.AmountMicroEps, "dataset_id": m.DatasetID, "reservation_id": m.ReservationID, "reason": m.Reason, "movement": m.ID}})
}

// Ledger returns a user's budget movements, oldest first.
func (s *Store) Ledger(userID string) ([]*Movement, error) {
	var out []*Movement
	err := s.view(func(txn *badger.Txn) error {
		var err error
		out, err = scanAll[Movement](txn, prefixLedger+userID+"/")
		return err
	})
	return out, err
}

const (
	prefixReservation = "reservation/"
	prefixCap         = "budget-cap/" // budget-cap/<user>/<dataset>
)

// Reservation states.
const (
	ReservationHeld      = "held"
	ReservationCommitted = "committed"
	ReservationRefunded  = "refunded"
)

// Reservation is budget set aside for one job or query until it is committed
// (spent) or refunded.
type Reservation struct {
	ID             string    `json:"id"`
	UserID         string    `json:"user_id"`
	DatasetID      string    `json:"dataset_id,omitempty"`
	AmountMicroEps int64     `json:"amount_micro_eps"`
	State          string    `json:"state"`
	Reason         string    `json:"reason,omitempty"`
	CreatedAt      time.Time `json:"created_at"`
	SettledAt      time.Time `json:"settled_at,omitzero"`
}

// DatasetCap is what one user has used (reserved plus committed) on one
// dataset, and optionally a cap on it.
type DatasetCap struct {
	UserID       string `json:"user_id"`
	DatasetID    string `json:"dataset_id"`
	CapMicroEps  int64  `json:"cap_micro_eps"`  // -1: no cap
	UsedMicroEps int64  `json:"used_micro_eps"` // reserved + committed on this dataset
}

func capKey(userID, datasetID string) string { return prefixCap + userID + "/" + datasetID }

// GrantBudget adds delta (negative: takes away) to a user's available budget
// and records the movement. The budget cannot go below zero
// (ErrInsufficientBudget).
func (s *Store) GrantBudget(userID string, delta int64, actor, reason string) (*User, error) {
	var out *User
	err := s.update(func(txn *badger.Txn) error {
		var err error
		out, err = s.grantTxn(txn, userID, delta, actor, reason)
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// grantTxn is GrantBudget inside txn.
func (s *Store) grantTxn(txn *badger.Txn, userID string, delta int64, actor, reason string) (*User, error) {
	rec, err := getUser(txn, userID)
	if err != nil {
		return nil, err
	}
	if delta > 0 {
		if err := notSelf(txn, actor, userID, "raise your own privacy budget"); err != nil {
			return nil, err
		}
	}
	if rec.BudgetMicroEps+delta < 0 {
		return nil, fmt.Errorf("%w: available %d, taking away %d micro-epsilon", ErrInsufficientBudget, rec.BudgetMicroEps, -delta)
	}
	rec.BudgetMicroEps += delta
	if err := putJSON(txn, prefixUser+rec.ID, rec); err != nil {
		return nil, err
	}
	out := rec.User
	return &out, s.recordMovement(txn, Movement{UserID: rec.ID, Kind: MoveGrant, AmountMicroEps: delta, Actor: actor, Reason: reason})
}

// notSelf refuses an actor changing their own budget or permissions
// (separation of duties, as Decide refuses deciding one's own request):
// another administrator must. The Owner is exempt: the data is theirs.
func notSelf(txn *badger.Txn, actor, target, what string) error {
	if actor == "" || actor != target {
		return nil
	}
	rec, err := getUser(txn, actor)
	if err != nil {
		return err
	}
	if rec.Role == RoleOwner {
		return nil
	}
	return fmt.Errorf("%w: you cannot %s; another administrator must", ErrForbidden, what)
}

// SetDatasetCap caps what a user may spend on one dataset (cap < 0 removes the cap).
func (s *Store) SetDatasetCap(userID, datasetID string, capMicroEps int64, actor string) error {
	return s.update(func(txn *badger.Txn) error {
		if _, err := getUser(txn, userID); err != nil {
			return err
		}
		if ok, err := exists(txn, prefixDataset+datasetID); err != nil {
			return err
		} else if !ok {
			return fmt.Errorf("%w: dataset %s", ErrNotFound, datasetID)
		}
		c := DatasetCap{UserID: userID, DatasetID: datasetID}
		found := true
		if err := getJSON(txn, capKey(userID, datasetID), &c); errors.Is(err, ErrNotFound) {
			found = false // no cap yet: any cap restricts
		} else if err != nil {
			return err
		}
		if capMicroEps < 0 {
			capMicroEps = -1
		}
		if found && c.CapMicroEps >= 0 && (capMicroEps < 0 || capMicroEps > c.CapMicroEps) {
			if err := notSelf(txn, actor, userID, "raise your own budget cap"); err != nil {
				return err
			}
		}
		c.CapMicroEps = capMicroEps
		if err := putJSON(txn, capKey(userID, datasetID), c); err != nil {
			return err
		}
		return s.audit(txn, AuditEvent{Actor: actor, Action: "budget.cap", Target: "user/" + userID,
			Detail: map[string]any{"dataset_id": datasetID, "cap_micro_eps": capMicroEps}})
	})
}

// DatasetCapFor returns a user's usage and cap on a dataset, or ErrNotFound
// if the user never used it and has no cap on it.
func (s *Store) DatasetCapFor(userID, datasetID string) (*DatasetCap, error) {
	var c DatasetCap
	if err := s.view(func(txn *badger.Txn) error { return getJSON(txn, capKey(userID, datasetID), &c) }); err != nil {
		return nil, err
	}
	return &c, nil
}

// take moves amount from a user's available budget, checking the dataset cap.
func (s *Store) take(txn *badger.Txn, rec *userRecord, datasetID string, amount int64) error {
	c, err := affordable(txn, rec, datasetID, amount)
	if err != nil {
		return err
	}
	if datasetID != "" {
		c.UsedMicroEps += amount
		if err := putJSON(txn, capKey(rec.ID, datasetID), c); err != nil {
			return err
		}
	}
	rec.BudgetMicroEps -= amount
	return nil
}

// affordable checks that rec's budget and its cap on datasetID (if any)
// allow spending amount, and returns the dataset's cap record.
func affordable(txn *badger.Txn, rec *userRecord, datasetID string, amount int64) (DatasetCap, error) {
	c := DatasetCap{UserID: rec.ID, DatasetID: datasetID, CapMicroEps: -1}
	if amount <= 0 {
		return c, invalid("amount", "must be positive")
	}
	if rec.BudgetMicroEps < amount {
		return c, fmt.Errorf("%w: available %d, asked %d micro-epsilon", ErrInsufficientBudget, rec.BudgetMicroEps, amount)
	}
	if datasetID != "" {
		// Usage per dataset is always kept, so a cap set later counts what
		// was spent before it.
		if err := getJSON(txn, capKey(rec.ID, datasetID), &c); err != nil && !errors.Is(err, ErrNotFound) {
			return c, err
		}
		if c.CapMicroEps >= 0 && c.UsedMicroEps+amount > c.CapMicroEps {
			return c, fmt.Errorf("%w: dataset cap %d, used %d, asked %d micro-epsilon", ErrInsufficientBudget, c.CapMicroEps, c.UsedMicroEps, amount)
		}
	}
	return c, nil
}

// CheckSpend tells, without spending, whether userID could spend amount on
// datasetID now (ErrInsufficientBudget if not). The spend itself checks
// again in its own transaction; this lets a caller refuse before any work.
func (s *Store) CheckSpend(userID, datasetID string, amount int64) error {
	return s.view(func(txn *badger.Txn) error {
		rec, err := getUser(txn, userID)
		if err != nil {
			return err
		}
		_, err = affordable(txn, rec, datasetID, amount)
		return err
	})
}

// AuditRefused records a refused request (e.g. a DP query) by actor on
// target in the audit log, with the refusal's reason.
func (s *Store) AuditRefused(actor, action, target, reason string) error {
	return s.update(func(txn *badger.Txn) error {
		return s.audit(txn, AuditEvent{Actor: actor, Action: action, Target: target, Detail: map[string]any{"reason": reason}})
	})
}

// Reserve sets amount aside from a user's budget for a dataset, in one
// transaction. It returns ErrInsufficientBudget if the available budget or
// the dataset cap would be exceeded.
func (s *Store) Reserve(userID, datasetID string, amount int64, actor, reason string) (*Reservation, error) {
	var res *Reservation
	err := s.update(func(txn *badger.Txn) error {
		var err error
		res, err = s.reserveTxn(txn, userID, datasetID, amount, actor, reason)
		return err
	})
	if err != nil {
		return nil, err
	}
	return res, nil
}

// reserveTxn is Reserve inside txn.
func (s *Store) reserveTxn(txn *badger.Txn, userID, datasetID string, amount int64, actor, reason string) (*Reservation, error) {
	rec, err := getUser(txn, userID)
	if err != nil {
		return nil, err
	}
	if err := s.take(txn, rec, datasetID, amount); err != nil {
		return nil, err
	}
	rec.ReservedMicroEps += amount
	if err := putJSON(txn, prefixUser+rec.ID, rec); err != nil {
		return nil, err
	}
	res := Reservation{ID: newID(), UserID: userID, DatasetID: datasetID, AmountMicroEps: amount, State: ReservationHeld, Reason: reason, CreatedAt: s.now().UTC()}
	if err := putJSON(txn, prefixReservation+res.ID, res); err != nil {
		return nil, err
	}
	return &res, s.recordMovement(txn, Movement{UserID: userID, DatasetID: datasetID, Kind: MoveReserve, AmountMicroEps: amount,
		ReservationID: res.ID, Actor: actor, Reason: reason})
}

// settle moves a held reservation to state, in one transaction.
func (s *Store) settle(resID, state, actor, reason string) (*Reservation, error) {
	var out *Reservation
	err := s.update(func(txn *badger.Txn) error {
		var err error
		out, err = s.settleTxn(txn, resID, state, actor, reason)
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// settleTxn is settle inside txn.
func (s *Store) settleTxn(txn *badger.Txn, resID, state, actor, reason string) (*Reservation, error) {
	var out Reservation
	err := func() error {
		var res Reservation
		if err := getJSON(txn, prefixReservation+resID, &res); err != nil {
			return err
		}
		if res.State != ReservationHeld {
			return fmt.Errorf("%w: reservation %s is already %s", ErrConflictState, res.ID, res.State)
		}
		rec, err := getUser(txn, res.UserID)
		if err != nil {
			return err
		}
		rec.ReservedMicroEps -= res.AmountMicroEps
		kind := MoveCommit
		if state == ReservationCommitted {
			rec.SpentMicroEps += res.AmountMicroEps
		} else {
			kind = MoveRefund
			rec.BudgetMicroEps += res.AmountMicroEps
			if res.DatasetID != "" {
				var c DatasetCap
				err := getJSON(txn, capKey(res.UserID, res.DatasetID), &c)
				if err != nil && !errors.Is(err, ErrNotFound) {
					return err
				}
				if err == nil {
					c.UsedMicroEps -= res.AmountMicroEps
					if err := putJSON(txn, capKey(res.UserID, res.DatasetID), c); err != nil {
						return err
					}
				}
			}
		}
		if err := putJSON(txn, prefixUser+rec.ID, rec); err != nil {
			return err
		}
		res.State = state
		res.SettledAt = s.now().UTC()
		if err := putJSON(txn, prefixReservation+res.ID, res); err != nil {
			return err
		}
		out = res
		return s.recordMovement(txn, Movement{UserID: res.UserID, DatasetID: res.DatasetID, Kind: kind, AmountMicroEps: res.AmountMicroEps,
			ReservationID: res.ID, Actor: actor, Reason: reason})
	}()
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// Commit spends a held reservation (reserved -> spent), in one transaction.
// A reservation already committed or refunded: ErrConflictState.
func (s *Store) Commit(resID, actor, reason string) (*Reservation, error) {
	return s.settle(resID, ReservationCommitted, actor, reason)
}

// Refund returns a held reservation to the available budget, in one
// transaction. A reservation already committed or refunded: ErrConflictState.
func (s *Store) Refund(resID, actor, reason string) (*Reservation, error) {
	return s.settle(resID, ReservationRefunded, actor, reason)
}

// Spend takes amount from a user's budget straight to spent, in one
// transaction (a reservation committed at once), e.g. for an aggregate query.
func (s *Store) Spend(userID, datasetID string, amount int64, actor, reason string) error {
	return s.update(func(txn *badger.Txn) error {
		rec, err := getUser(txn, userID)
		if err != nil {
			return err
		}
		if err := s.take(txn, rec, datasetID, amount); err != nil {
			return err
		}
		rec.SpentMicroEps += amount
		if err := putJSON(txn, prefixUser+rec.ID, rec); err != nil {
			return err
		}
		return s.recordMovement(txn, Movement{UserID: userID, DatasetID: datasetID, Kind: MoveSpend, AmountMicroEps: amount, Actor: actor, Reason: reason})
	})
}

// Reservation returns one reservation, or ErrNotFound.
func (s *Store) Reservation(id string) (*Reservation, error) {
	var r Reservation
	if err := s.view(func(txn *badger.Txn) error { return getJSON(txn, prefixReservation+id, &r) }); err != nil {
		return nil, err
	}
	return &r, nil
}
