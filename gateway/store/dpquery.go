package store

import (
	"fmt"
	"time"

	"github.com/dgraph-io/badger/v4"
)

const prefixQuery = "dpquery/" // dpquery/<user>/<time>-<id>

// DPQuery is one answered differentially private statistics query: what was
// asked, what it cost and the noisy answer given.
type DPQuery struct {
	ID         string    `json:"id"`
	UserID     string    `json:"user_id"`
	DatasetID  string    `json:"dataset_id"`
	Stat       string    `json:"stat"`
	Column     string    `json:"column"`
	Lower      float64   `json:"lower"`
	Upper      float64   `json:"upper"`
	Bins       int       `json:"bins,omitempty"`
	Mechanism  string    `json:"mechanism"`
	Delta      float64   `json:"delta,omitempty"`
	EpsilonMic int64     `json:"epsilon_micro_eps"`
	Answer     []float64 `json:"answer"`
	Time       time.Time `json:"time"`
}

// RecordQuery charges q.EpsilonMic to the user's budget on the dataset
// (straight to spent) and stores the query with its answer, in one
// transaction: the answer may be given only if this returns nil. Beyond the
// budget or the dataset cap: ErrInsufficientBudget, and nothing is stored.
func (s *Store) RecordQuery(q *DPQuery) error {
	if q.EpsilonMic <= 0 {
		return invalid("epsilon", "must be positive")
	}
	q.ID, q.Time = newID(), s.now().UTC()
	return s.update(func(txn *badger.Txn) error {
		rec, err := getUser(txn, q.UserID)
		if err != nil {
			return err
		}
		if err := s.take(txn, rec, q.DatasetID, q.EpsilonMic); err != nil {
			return err
		}
		rec.SpentMicroEps += q.EpsilonMic
		if err := putJSON(txn, prefixUser+rec.ID, rec); err != nil {
			return err
		}
		if err := putJSON(txn, fmt.Sprintf("%s%s/%020d-%s", prefixQuery, q.UserID, q.Time.UnixNano(), q.ID), q); err != nil {
			return err
		}
		return s.recordMovement(txn, Movement{UserID: q.UserID, DatasetID: q.DatasetID, Kind: MoveSpend, AmountMicroEps: q.EpsilonMic,
			Actor: q.UserID, Reason: fmt.Sprintf("dp query %s: %s of %s", q.ID, q.Stat, q.Column)})
	})
}

// Queries lists a user's answered queries, oldest first.
func (s *Store) Queries(userID string) ([]*DPQuery, error) {
	var out []*DPQuery
	err := s.view(func(txn *badger.Txn) error {
		var err error
		out, err = scanAll[DPQuery](txn, prefixQuery+userID+"/")
		return err
	})
	return out, err
}
