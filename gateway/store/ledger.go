package store

import (
	"fmt"
	"time"

	"github.com/dgraph-io/badger/v4"
)

const prefixLedger = "ledger/"

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
