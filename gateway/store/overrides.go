package store

import (
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"
)

const prefixOverride = "override/" // override/<dataset>/<user>

// Override is an administrator's per-dataset, per-user exception to the
// dataset's defaults. Nil fields keep the default.
type Override struct {
	DatasetID string `json:"dataset_id"`
	UserID    string `json:"user_id"`
	// Train, if set, allows (true) or forbids (false) this user to train on the dataset.
	Train *bool `json:"train,omitempty"`
	// AutoRelease, if set, releases this user's results without review (true)
	// or always sends them to review (false).
	AutoRelease *bool `json:"auto_release,omitempty"`
}

// SetOverride stores (replaces) the override for o.DatasetID and o.UserID.
// An override with both fields nil deletes it.
func (s *Store) SetOverride(o Override, actor string) error {
	return s.update(func(txn *badger.Txn) error {
		if ok, err := exists(txn, prefixDataset+o.DatasetID); err != nil {
			return err
		} else if !ok {
			return fmt.Errorf("%w: dataset %s", ErrNotFound, o.DatasetID)
		}
		if _, err := getUser(txn, o.UserID); err != nil {
			return fmt.Errorf("%w: user %s", err, o.UserID)
		}
		key := prefixOverride + o.DatasetID + "/" + o.UserID
		var old Override
		if err := getJSON(txn, key, &old); err != nil && !errors.Is(err, ErrNotFound) {
			return err
		}
		if loosens(&old, &o) {
			if err := notSelf(txn, actor, o.UserID, "widen your own permissions on a dataset"); err != nil {
				return err
			}
		}
		var err error
		if o.Train == nil && o.AutoRelease == nil {
			err = txn.Delete([]byte(key))
		} else {
			err = putJSON(txn, key, o)
		}
		if err != nil {
			return err
		}
		return s.audit(txn, AuditEvent{Actor: actor, Action: "dataset.override", Target: "dataset/" + o.DatasetID,
			Detail: map[string]any{"user_id": o.UserID, "train": o.Train, "auto_release": o.AutoRelease}})
	})
}

// loosens reports whether replacing old by o grants something (train, skip
// review) or lifts a restriction (a train or auto-release refusal).
func loosens(old, o *Override) bool {
	yes := func(b *bool) bool { return b != nil && *b }
	no := func(b *bool) bool { return b != nil && !*b }
	return yes(o.Train) || yes(o.AutoRelease) || (no(old.Train) && !no(o.Train)) || (no(old.AutoRelease) && !no(o.AutoRelease))
}

// Overrides lists a dataset's overrides.
func (s *Store) Overrides(datasetID string) ([]*Override, error) {
	var out []*Override
	err := s.view(func(txn *badger.Txn) error {
		var err error
		out, err = scanAll[Override](txn, prefixOverride+datasetID+"/")
		return err
	})
	return out, err
}

// TrainDecision is the policy's answer to "may this user train on this dataset".
type TrainDecision struct {
	Allowed bool `json:"allowed"`
	// Review is true when results must wait for a compliance officer.
	Review bool `json:"review"`
	// Reason says why, for logs and refusals.
	Reason string `json:"reason"`
}

// CanTrain decides whether a user may train on a dataset and whether the
// result needs review. The user needs can_make_data_requests; an override
// may forbid training. Results on public data are released at once, on private
// data after review, unless an override says otherwise.
func (s *Store) CanTrain(userID, datasetID string) (TrainDecision, error) {
	if err := s.Authorize(userID, PermMakeDataRequests); err != nil {
		if errors.Is(err, ErrForbidden) {
			return TrainDecision{Reason: "role lacks " + string(PermMakeDataRequests)}, nil
		}
		return TrainDecision{}, err
	}
	var d Dataset
	var o Override
	err := s.view(func(txn *badger.Txn) error {
		if err := getJSON(txn, prefixDataset+datasetID, &d); err != nil {
			return err
		}
		if err := getJSON(txn, prefixOverride+datasetID+"/"+userID, &o); err != nil && !errors.Is(err, ErrNotFound) {
			return err
		}
		return nil
	})
	if err != nil {
		return TrainDecision{}, err
	}
	dec := TrainDecision{Allowed: true, Review: d.Visibility != VisibilityPublic, Reason: d.Visibility + " dataset"}
	if o.Train != nil && !*o.Train {
		return TrainDecision{Reason: "an administrator forbade this user to train on this dataset"}, nil
	}
	if o.AutoRelease != nil {
		dec.Review = !*o.AutoRelease
		dec.Reason = "per-user override"
	}
	return dec, nil
}
