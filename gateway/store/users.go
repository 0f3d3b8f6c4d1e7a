package store

import (
	"errors"
	"fmt"
	"github.com/fedgrid/fedgrid/wire"
	"net/mail"
	"slices"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/fedgrid/fedgrid/crypto"
)

// Permission is one capability a role grants (CONTRACT.md "Roles and permissions").
type Permission string

// The contract's permissions.
const (
	PermMakeDataRequests     Permission = "can_make_data_requests"
	PermTriageRequests       Permission = "can_triage_requests"
	PermManagePrivacyBudget  Permission = "can_manage_privacy_budget"
	PermCreateUsers          Permission = "can_create_users"
	PermEditRoles            Permission = "can_edit_roles"
	PermManageInfrastructure Permission = "can_manage_infrastructure"
	PermUploadData           Permission = "can_upload_data"
	PermEditSettings         Permission = "can_edit_settings"
)

// AllPermissions lists every permission in the contract's order.
var AllPermissions = []Permission{
	PermMakeDataRequests, PermTriageRequests, PermManagePrivacyBudget, PermCreateUsers,
	PermEditRoles, PermManageInfrastructure, PermUploadData, PermEditSettings,
}

// ValidPermission reports whether p is one of AllPermissions.
func ValidPermission(p Permission) bool { return slices.Contains(AllPermissions, p) }

// Default role names.
const (
	RoleOwner             = "Owner"
	RoleAdministrator     = "Administrator"
	RoleComplianceOfficer = "Compliance Officer"
	RoleDataScientist     = "Data Scientist"
)

// Role is a named set of permissions.
type Role struct {
	Name        string       `json:"name"`
	Permissions []Permission `json:"permissions"`
	// Default marks the four roles that setup creates.
	Default bool `json:"default"`
}

// Has reports whether the role grants p.
func (r *Role) Has(p Permission) bool { return slices.Contains(r.Permissions, p) }

// DefaultRoles returns the contract's four default roles.
func DefaultRoles() []Role {
	var admin []Permission
	for _, p := range AllPermissions {
		if p != PermEditRoles && p != PermManageInfrastructure {
			admin = append(admin, p)
		}
	}
	return []Role{
		{Name: RoleOwner, Permissions: slices.Clone(AllPermissions), Default: true},
		{Name: RoleAdministrator, Permissions: admin, Default: true},
		{Name: RoleComplianceOfficer, Permissions: []Permission{PermTriageRequests, PermManagePrivacyBudget}, Default: true},
		{Name: RoleDataScientist, Permissions: []Permission{PermMakeDataRequests}, Default: true},
	}
}

// User is a gateway account. The password hash and token generation are kept
// by the store and never leave it.
type User struct {
	ID    string `json:"id"`
	Email string `json:"email"`
	Name  string `json:"name"`
	Role  string `json:"role"`
	// PeerID is the libp2p identity bound to the account (data scientists), or "".
	PeerID string `json:"peer_id,omitempty"`
	// BudgetMicroEps is the privacy budget still available, in micro-epsilon.
	BudgetMicroEps int64 `json:"budget_micro_eps"`
	// ReservedMicroEps is budget held by reservations not yet committed or refunded.
	ReservedMicroEps int64 `json:"reserved_micro_eps"`
	// SpentMicroEps is budget committed so far.
	SpentMicroEps int64     `json:"spent_micro_eps"`
	CreatedAt     time.Time `json:"created_at"`
}

type userRecord struct {
	User
	PasswordHash string `json:"password_hash"`
	Generation   uint64 `json:"generation"`
}

func normEmail(e string) string { return strings.ToLower(strings.TrimSpace(e)) }

func validateEmail(e string) error {
	if e == "" {
		return invalid("email", "required")
	}
	if len(e) > 254 {
		return invalid("email", "longer than 254 characters")
	}
	a, err := mail.ParseAddress(e)
	if err != nil || a.Address != e {
		return invalid("email", "not an email address")
	}
	return nil
}

// MinPasswordLen is the shortest password accepted.
const MinPasswordLen = 8

func validatePassword(p string) error {
	if len(p) < MinPasswordLen {
		return invalid("password", "shorter than %d characters", MinPasswordLen)
	}
	if len(p) > crypto.MaxPasswordBytes {
		return invalid("password", "longer than %d bytes", crypto.MaxPasswordBytes)
	}
	return nil
}

func validateName(field, n string, max int) error {
	if len(n) > max {
		return invalid(field, "longer than %d characters", max)
	}
	return nil
}

// SetupDone reports whether an Owner exists.
func (s *Store) SetupDone() (bool, error) {
	var done bool
	err := s.view(func(txn *badger.Txn) error {
		var err error
		done, err = exists(txn, keyOwner)
		return err
	})
	return done, err
}

// Setup creates the default roles and the Owner account. It succeeds once;
// later calls return ErrSetupDone.
func (s *Store) Setup(email, password, name string) (*User, error) {
	email = normEmail(email)
	if err := validateEmail(email); err != nil {
		return nil, err
	}
	if err := validatePassword(password); err != nil {
		return nil, err
	}
	if err := validateName("name", name, 200); err != nil {
		return nil, err
	}
	if done, err := s.SetupDone(); err != nil {
		return nil, err
	} else if done {
		return nil, ErrSetupDone
	}
	hash, err := s.hashPassword(password)
	if err != nil {
		return nil, err
	}
	rec := userRecord{User: User{ID: newID(), Email: email, Name: name, Role: RoleOwner, CreatedAt: s.now().UTC()}, PasswordHash: hash}
	err = s.update(func(txn *badger.Txn) error {
		if done, err := exists(txn, keyOwner); err != nil {
			return err
		} else if done {
			return ErrSetupDone
		}
		for _, r := range DefaultRoles() {
			if err := putJSON(txn, prefixRole+r.Name, r); err != nil {
				return err
			}
		}
		if err := s.putUser(txn, &rec, nil); err != nil {
			return err
		}
		if err := txn.Set([]byte(keyOwner), []byte(rec.ID)); err != nil {
			return err
		}
		return s.audit(txn, AuditEvent{Actor: rec.ID, Action: "setup", Target: "user/" + rec.ID, Detail: map[string]any{"email": email}})
	})
	if err != nil {
		return nil, err
	}
	u := rec.User
	return &u, nil
}

// putUser writes rec and its indexes; old is the previous version (nil for a
// new user). It refuses duplicate emails and peer IDs.
func (s *Store) putUser(txn *badger.Txn, rec *userRecord, old *userRecord) error {
	if old == nil || old.Email != rec.Email {
		if ok, err := exists(txn, prefixUserEmail+rec.Email); err != nil {
			return err
		} else if ok {
			return fmt.Errorf("%w: a user with email %q", ErrExists, rec.Email)
		}
		if old != nil {
			if err := txn.Delete([]byte(prefixUserEmail + old.Email)); err != nil {
				return err
			}
		}
		if err := txn.Set([]byte(prefixUserEmail+rec.Email), []byte(rec.ID)); err != nil {
			return err
		}
	}
	if old == nil || old.PeerID != rec.PeerID {
		if rec.PeerID != "" {
			if ok, err := exists(txn, prefixUserPeer+rec.PeerID); err != nil {
				return err
			} else if ok {
				return fmt.Errorf("%w: a user with peer ID %s", ErrExists, rec.PeerID)
			}
			if err := txn.Set([]byte(prefixUserPeer+rec.PeerID), []byte(rec.ID)); err != nil {
				return err
			}
		}
		if old != nil && old.PeerID != "" {
			if err := txn.Delete([]byte(prefixUserPeer + old.PeerID)); err != nil {
				return err
			}
		}
	}
	return putJSON(txn, prefixUser+rec.ID, rec)
}

func getUser(txn *badger.Txn, id string) (*userRecord, error) {
	if id == "" {
		return nil, ErrNotFound
	}
	var rec userRecord
	if err := getJSON(txn, prefixUser+id, &rec); err != nil {
		return nil, err
	}
	return &rec, nil
}

func getUserByIndex(txn *badger.Txn, key string) (*userRecord, error) {
	id, err := getBytes(txn, key)
	if err != nil {
		return nil, err
	}
	return getUser(txn, string(id))
}

func getRole(txn *badger.Txn, name string) (*Role, error) {
	if name == "" {
		return nil, ErrNotFound
	}
	var r Role
	if err := getJSON(txn, prefixRole+name, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// NewUser is what CreateUser needs.
type NewUser struct {
	Email, Password, Name, Role, PeerID string
	BudgetMicroEps                      int64
	// Actor is the user ID recorded in the audit log ("" for the system).
	Actor string
}

// CreateUser creates an account. Role defaults to Data Scientist; the Owner
// role cannot be given (ErrProtected). Duplicate email or peer ID: ErrExists.
// The caller validates the peer ID's syntax.
func (s *Store) CreateUser(nu NewUser) (*User, error) {
	nu.Email = normEmail(nu.Email)
	if err := validateEmail(nu.Email); err != nil {
		return nil, err
	}
	if err := validatePassword(nu.Password); err != nil {
		return nil, err
	}
	if err := validateName("name", nu.Name, 200); err != nil {
		return nil, err
	}
	if nu.Role == "" {
		nu.Role = RoleDataScientist
	}
	if nu.Role == RoleOwner {
		return nil, fmt.Errorf("%w: the Owner role cannot be assigned", ErrProtected)
	}
	if nu.BudgetMicroEps < 0 {
		return nil, invalid("budget_epsilon", "negative")
	}
	hash, err := s.hashPassword(nu.Password)
	if err != nil {
		return nil, err
	}
	rec := userRecord{User: User{ID: newID(), Email: nu.Email, Name: nu.Name, Role: nu.Role, PeerID: nu.PeerID,
		BudgetMicroEps: nu.BudgetMicroEps, CreatedAt: s.now().UTC()}, PasswordHash: hash}
	err = s.update(func(txn *badger.Txn) error {
		if err := s.requireSetup(txn); err != nil {
			return err
		}
		if _, err := getRole(txn, rec.Role); errors.Is(err, ErrNotFound) {
			return invalid("role", "no role named %q", rec.Role)
		} else if err != nil {
			return err
		}
		if err := s.putUser(txn, &rec, nil); err != nil {
			return err
		}
		if rec.BudgetMicroEps > 0 {
			if err := s.recordMovement(txn, Movement{UserID: rec.ID, Kind: MoveGrant, AmountMicroEps: rec.BudgetMicroEps,
				Actor: nu.Actor, Reason: "initial budget"}); err != nil {
				return err
			}
		}
		return s.audit(txn, AuditEvent{Actor: nu.Actor, Action: "user.create", Target: "user/" + rec.ID,
			Detail: map[string]any{"email": rec.Email, "role": rec.Role, "peer_id": rec.PeerID, "budget_micro_eps": rec.BudgetMicroEps}})
	})
	if err != nil {
		return nil, err
	}
	u := rec.User
	return &u, nil
}

func (s *Store) requireSetup(txn *badger.Txn) error {
	ok, err := exists(txn, keyOwner)
	if err != nil {
		return err
	}
	if !ok {
		return ErrSetupRequired
	}
	return nil
}

// User returns the account with this ID, or ErrNotFound.
func (s *Store) User(id string) (*User, error) {
	var u *User
	err := s.view(func(txn *badger.Txn) error {
		rec, err := getUser(txn, id)
		if err == nil {
			u = &rec.User
		}
		return err
	})
	return u, err
}

// UserByEmail returns the account with this email, or ErrNotFound.
func (s *Store) UserByEmail(email string) (*User, error) {
	var u *User
	err := s.view(func(txn *badger.Txn) error {
		rec, err := getUserByIndex(txn, prefixUserEmail+normEmail(email))
		if err == nil {
			u = &rec.User
		}
		return err
	})
	return u, err
}

// UserByPeerID returns the account bound to a libp2p peer ID, or ErrNotFound.
func (s *Store) UserByPeerID(peerID string) (*User, error) {
	var u *User
	err := s.view(func(txn *badger.Txn) error {
		if peerID == "" {
			return ErrNotFound
		}
		rec, err := getUserByIndex(txn, prefixUserPeer+peerID)
		if err == nil {
			u = &rec.User
		}
		return err
	})
	return u, err
}

// Users lists every account, oldest first.
func (s *Store) Users() ([]*User, error) {
	var out []*User
	err := s.view(func(txn *badger.Txn) error {
		recs, err := scanAll[userRecord](txn, prefixUser)
		out = make([]*User, 0, len(recs))
		for _, r := range recs {
			out = append(out, &r.User)
		}
		return err
	})
	slices.SortFunc(out, func(a, b *User) int { return a.CreatedAt.Compare(b.CreatedAt) })
	return out, err
}

// UserUpdate names the fields to change; nil fields stay.
type UserUpdate struct {
	Email, Name, Role, PeerID, Password *string
	// BudgetMicroEps sets the available budget; the difference is recorded in the ledger.
	BudgetMicroEps *int64
	// Actor is the user ID recorded in the audit log and ledger.
	Actor string
}

// UpdateUser changes an account. A new password revokes the account's tokens.
// Nobody can be given the Owner role, and the Owner's role cannot change
// (ErrProtected).
func (s *Store) UpdateUser(id string, upd UserUpdate) (*User, error) {
	var hash string
	if upd.Password != nil {
		if err := validatePassword(*upd.Password); err != nil {
			return nil, err
		}
		var err error
		if hash, err = s.hashPassword(*upd.Password); err != nil {
			return nil, err
		}
	}
	if upd.Email != nil {
		e := normEmail(*upd.Email)
		if err := validateEmail(e); err != nil {
			return nil, err
		}
		upd.Email = &e
	}
	if upd.Name != nil {
		if err := validateName("name", *upd.Name, 200); err != nil {
			return nil, err
		}
	}
	if upd.BudgetMicroEps != nil && *upd.BudgetMicroEps < 0 {
		return nil, invalid("budget_epsilon", "negative")
	}
	var out User
	err := s.update(func(txn *badger.Txn) error {
		old, err := getUser(txn, id)
		if err != nil {
			return err
		}
		rec := *old
		changed := map[string]any{}
		if upd.Email != nil && *upd.Email != rec.Email {
			rec.Email = *upd.Email
			changed["email"] = rec.Email
		}
		if upd.Name != nil {
			rec.Name = *upd.Name
			changed["name"] = rec.Name
		}
		if upd.Role != nil && *upd.Role != rec.Role {
			if *upd.Role == RoleOwner || rec.Role == RoleOwner {
				return fmt.Errorf("%w: the Owner role can be neither assigned nor taken away", ErrProtected)
			}
			if _, err := getRole(txn, *upd.Role); errors.Is(err, ErrNotFound) {
				return invalid("role", "no role named %q", *upd.Role)
			} else if err != nil {
				return err
			}
			rec.Role = *upd.Role
			changed["role"] = rec.Role
		}
		if upd.BudgetMicroEps != nil && *upd.BudgetMicroEps > rec.BudgetMicroEps {
			if err := notSelf(txn, upd.Actor, id, "raise your own privacy budget"); err != nil {
				return err
			}
		}
		if upd.PeerID != nil && *upd.PeerID != rec.PeerID {
			rec.PeerID = *upd.PeerID
			changed["peer_id"] = rec.PeerID
		}
		if upd.Password != nil {
			rec.PasswordHash = hash
			rec.Generation++
			changed["password"] = "changed"
		}
		if upd.BudgetMicroEps != nil && *upd.BudgetMicroEps != rec.BudgetMicroEps {
			delta := *upd.BudgetMicroEps - rec.BudgetMicroEps
			rec.BudgetMicroEps = *upd.BudgetMicroEps
			changed["budget_micro_eps"] = rec.BudgetMicroEps
			if err := s.recordMovement(txn, Movement{UserID: rec.ID, Kind: MoveGrant, AmountMicroEps: delta,
				Actor: upd.Actor, Reason: "budget set by an administrator"}); err != nil {
				return err
			}
		}
		if err := s.putUser(txn, &rec, old); err != nil {
			return err
		}
		out = rec.User
		if len(changed) == 0 {
			return nil
		}
		return s.audit(txn, AuditEvent{Actor: upd.Actor, Action: "user.update", Target: "user/" + rec.ID, Detail: changed})
	})
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// DeleteUser removes an account, which revokes its tokens, cancels its
// unfinished jobs and withdraws its pending requests (refunding every
// reservation). The Owner cannot be deleted (ErrProtected).
func (s *Store) DeleteUser(id, actor string) error {
	return s.update(func(txn *badger.Txn) error {
		rec, err := getUser(txn, id)
		if err != nil {
			return err
		}
		if rec.Role == RoleOwner {
			return fmt.Errorf("%w: the Owner cannot be deleted", ErrProtected)
		}
		// What the account still has in flight goes with it, in this same
		// transaction: its unfinished jobs are cancelled and its pending
		// requests withdrawn, which refunds every epsilon reservation.
		// Otherwise a job would train for nobody and a release request
		// would sit in the review queue with a reservation no decision
		// could settle.
		const why = "the requester's account was deleted"
		jobs, err := scanWhere(txn, prefixJob, func(j *Job) bool { return j.UserID == rec.ID && j.ParentID == "" && !j.Terminal() })
		if err != nil {
			return err
		}
		cancelled := make([]string, 0, len(jobs))
		for _, j := range jobs {
			old := j.State
			j.State, j.FinishedAt, j.LeaseExpires, j.Error = wire.StateCancelled, s.now().UTC(), time.Time{}, "cancelled: "+why
			if err := s.putJob(txn, j, old); err != nil {
				return err
			}
			cancelled = append(cancelled, j.ID)
		}
		reqs, err := scanWhere(txn, prefixRequest, RequestFilter{UserID: rec.ID, State: wire.RequestPending}.match)
		if err != nil {
			return err
		}
		withdrawn := make([]string, 0, len(reqs))
		for _, r := range reqs {
			if err := s.withdrawTxn(txn, r, actor, why, ""); err != nil {
				return err
			}
			withdrawn = append(withdrawn, r.ID)
		}
		for _, k := range []string{prefixUser + rec.ID, prefixUserEmail + rec.Email} {
			if err := txn.Delete([]byte(k)); err != nil {
				return err
			}
		}
		if rec.PeerID != "" {
			if err := txn.Delete([]byte(prefixUserPeer + rec.PeerID)); err != nil {
				return err
			}
		}
		return s.audit(txn, AuditEvent{Actor: actor, Action: "user.delete", Target: "user/" + rec.ID,
			Detail: map[string]any{"email": rec.Email, "cancelled_jobs": cancelled, "withdrawn_requests": withdrawn}})
	})
}

// Login checks an email and password and returns a session token valid for
// ttl. Any mismatch is ErrBadCredentials; the attempt is audited either way.
func (s *Store) Login(email, password string, ttl time.Duration) (token string, expires time.Time, u *User, err error) {
	email = normEmail(email)
	var rec *userRecord
	err = s.view(func(txn *badger.Txn) error {
		var err error
		rec, err = getUserByIndex(txn, prefixUserEmail+email)
		return err
	})
	if err != nil && !errors.Is(err, ErrNotFound) {
		return "", time.Time{}, nil, err
	}
	ok := false
	if rec == nil {
		if werr := s.hashes.Waste(password); werr != nil {
			return "", time.Time{}, nil, busyErr(werr)
		}
	} else if cerr := s.hashes.Check(rec.PasswordHash, password); cerr == nil {
		ok = true
	} else if !errors.Is(cerr, crypto.ErrPasswordMismatch) {
		return "", time.Time{}, nil, busyErr(cerr)
	}
	if !ok {
		actor := ""
		if rec != nil {
			actor = rec.ID
		}
		if aerr := s.update(func(txn *badger.Txn) error {
			return s.audit(txn, AuditEvent{Actor: actor, Action: "auth.login_failed", Target: "email/" + email})
		}); aerr != nil {
			return "", time.Time{}, nil, aerr
		}
		return "", time.Time{}, nil, ErrBadCredentials
	}
	expires = s.now().Add(ttl).UTC().Truncate(time.Second)
	token, err = s.tokens.Sign(crypto.Claims{UserID: rec.ID, Generation: rec.Generation, Expires: expires})
	if err != nil {
		return "", time.Time{}, nil, err
	}
	if err := s.update(func(txn *badger.Txn) error {
		return s.audit(txn, AuditEvent{Actor: rec.ID, Action: "auth.login", Target: "user/" + rec.ID})
	}); err != nil {
		return "", time.Time{}, nil, err
	}
	user := rec.User
	return token, expires, &user, nil
}

// Authenticate returns the account a session token belongs to. Expired,
// forged and revoked tokens (password changed, account deleted) are
// ErrUnauthenticated.
func (s *Store) Authenticate(token string) (*User, error) {
	c, err := s.tokens.Verify(token, s.now())
	if err != nil {
		return nil, ErrUnauthenticated
	}
	var u *User
	err = s.view(func(txn *badger.Txn) error {
		rec, err := getUser(txn, c.UserID)
		if errors.Is(err, ErrNotFound) || (err == nil && rec.Generation != c.Generation) {
			return ErrUnauthenticated
		}
		if err != nil {
			return err
		}
		u = &rec.User
		return nil
	})
	return u, err
}

// RevokeTokens invalidates every session token issued to the account so far.
func (s *Store) RevokeTokens(userID, actor string) error {
	return s.update(func(txn *badger.Txn) error {
		rec, err := getUser(txn, userID)
		if err != nil {
			return err
		}
		rec.Generation++
		if err := putJSON(txn, prefixUser+rec.ID, rec); err != nil {
			return err
		}
		return s.audit(txn, AuditEvent{Actor: actor, Action: "auth.revoke", Target: "user/" + rec.ID})
	})
}

// hashPassword hashes a new password in a slot of the store's hash limiter.
func (s *Store) hashPassword(password string) (string, error) {
	h, err := s.hashes.Hash(password)
	return h, busyErr(err)
}

// busyErr turns the hash limiter's crypto.ErrBusy into ErrBusy.
func busyErr(err error) error {
	if errors.Is(err, crypto.ErrBusy) {
		return ErrBusy
	}
	return err
}

// PasswordEvaluations returns how many password hashes and checks (argon2
// evaluations, about 19 MiB each) this store has run since it opened.
func (s *Store) PasswordEvaluations() int64 { return s.hashes.Evaluated() }
