package store

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/dgraph-io/badger/v4"
)

// This file is the one policy that HTTP routes and p2p protocol handlers both
// use: roles, permissions, peer-ID identities and per-dataset overrides.

// Roles lists every role, default roles first, then by name.
func (s *Store) Roles() ([]*Role, error) {
	var out []*Role
	err := s.view(func(txn *badger.Txn) error {
		var err error
		out, err = scanAll[Role](txn, prefixRole)
		return err
	})
	order := map[string]int{RoleOwner: 0, RoleAdministrator: 1, RoleComplianceOfficer: 2, RoleDataScientist: 3}
	slices.SortFunc(out, func(a, b *Role) int {
		oa, aok := order[a.Name]
		ob, bok := order[b.Name]
		switch {
		case aok && bok:
			return oa - ob
		case aok:
			return -1
		case bok:
			return 1
		}
		return strings.Compare(a.Name, b.Name)
	})
	return out, err
}

// Role returns one role, or ErrNotFound.
func (s *Store) Role(name string) (*Role, error) {
	var r *Role
	err := s.view(func(txn *badger.Txn) error {
		var err error
		r, err = getRole(txn, name)
		return err
	})
	return r, err
}

func validateRole(r *Role) error {
	r.Name = strings.TrimSpace(r.Name)
	if r.Name == "" {
		return invalid("name", "required")
	}
	if len(r.Name) > 64 || strings.ContainsAny(r.Name, "/\x00") {
		return invalid("name", "at most 64 characters, no '/'")
	}
	var perms []Permission
	for _, p := range r.Permissions {
		if !ValidPermission(p) {
			return invalid("permissions", "unknown permission %q", p)
		}
		if !slices.Contains(perms, p) {
			perms = append(perms, p)
		}
	}
	if perms == nil {
		perms = []Permission{}
	}
	r.Permissions = perms
	return nil
}

// CreateRole adds a custom role. An existing name: ErrExists.
func (s *Store) CreateRole(r Role, actor string) (*Role, error) {
	if err := validateRole(&r); err != nil {
		return nil, err
	}
	r.Default = false
	err := s.update(func(txn *badger.Txn) error {
		if err := s.requireSetup(txn); err != nil {
			return err
		}
		if ok, err := exists(txn, prefixRole+r.Name); err != nil {
			return err
		} else if ok {
			return fmt.Errorf("%w: role %q", ErrExists, r.Name)
		}
		if err := putJSON(txn, prefixRole+r.Name, r); err != nil {
			return err
		}
		return s.audit(txn, AuditEvent{Actor: actor, Action: "role.create", Target: "role/" + r.Name, Detail: map[string]any{"permissions": r.Permissions}})
	})
	if err != nil {
		return nil, err
	}
	return &r, nil
}

// UpdateRole replaces a role's permissions. The Owner role cannot change
// (ErrProtected). The change applies to the next request of every holder.
func (s *Store) UpdateRole(name string, perms []Permission, actor string) (*Role, error) {
	var out Role
	err := s.update(func(txn *badger.Txn) error {
		r, err := getRole(txn, name)
		if err != nil {
			return err
		}
		if r.Name == RoleOwner {
			return fmt.Errorf("%w: the Owner role cannot be changed", ErrProtected)
		}
		r.Permissions = perms
		if err := validateRole(r); err != nil {
			return err
		}
		if err := putJSON(txn, prefixRole+r.Name, r); err != nil {
			return err
		}
		out = *r
		return s.audit(txn, AuditEvent{Actor: actor, Action: "role.update", Target: "role/" + r.Name, Detail: map[string]any{"permissions": r.Permissions}})
	})
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// DeleteRole removes a role. The Owner role: ErrProtected; a role some user
// still holds: ErrConflictState.
func (s *Store) DeleteRole(name, actor string) error {
	return s.update(func(txn *badger.Txn) error {
		if _, err := getRole(txn, name); err != nil {
			return err
		}
		if name == RoleOwner {
			return fmt.Errorf("%w: the Owner role cannot be deleted", ErrProtected)
		}
		users, err := scanAll[userRecord](txn, prefixUser)
		if err != nil {
			return err
		}
		n := 0
		for _, u := range users {
			if u.Role == name {
				n++
			}
		}
		if n > 0 {
			return fmt.Errorf("%w: %d user(s) still hold role %q", ErrConflictState, n, name)
		}
		if err := txn.Delete([]byte(prefixRole + name)); err != nil {
			return err
		}
		return s.audit(txn, AuditEvent{Actor: actor, Action: "role.delete", Target: "role/" + name})
	})
}

// Permissions returns the permissions a user holds through their role.
func (s *Store) Permissions(userID string) ([]Permission, error) {
	var out []Permission
	err := s.view(func(txn *badger.Txn) error {
		rec, err := getUser(txn, userID)
		if err != nil {
			return err
		}
		r, err := getRole(txn, rec.Role)
		if errors.Is(err, ErrNotFound) {
			return nil // a role deleted under the user grants nothing
		}
		if err != nil {
			return err
		}
		out = slices.Clone(r.Permissions)
		return nil
	})
	return out, err
}

// Authorize is the policy check for an authenticated user: nil if the user's
// role grants perm now, ErrForbidden if not, ErrNotFound for no such user.
func (s *Store) Authorize(userID string, perm Permission) error {
	perms, err := s.Permissions(userID)
	if err != nil {
		return err
	}
	if !slices.Contains(perms, perm) {
		return fmt.Errorf("%w: %s needed", ErrForbidden, perm)
	}
	return nil
}

// ErrUnknownPeer is returned by AuthorizePeer for a peer ID that no
// administrator bound to an account.
var ErrUnknownPeer = errors.New("store: peer ID not registered on this gateway")

// AuthorizePeer is the same policy for a p2p request: it resolves the remote
// peer ID to its account and checks perm. It returns the user, or
// ErrUnknownPeer, or ErrForbidden.
func (s *Store) AuthorizePeer(peerID string, perm Permission) (*User, error) {
	u, err := s.UserByPeerID(peerID)
	if errors.Is(err, ErrNotFound) {
		return nil, ErrUnknownPeer
	}
	if err != nil {
		return nil, err
	}
	if err := s.Authorize(u.ID, perm); err != nil {
		return u, err
	}
	return u, nil
}

// AuthorizeManageUser is the policy for account administration. The actor
// needs can_create_users, may only give roles whose permissions they hold
// themselves, may only change or delete accounts whose role's permissions they
// hold, and only the Owner may change the Owner's account. Only the Owner
// creates, changes or deletes the accounts of privileged roles (Administrators
// and Compliance Officers: see PrivilegedPermissions), or gives such a role;
// anyone may narrow their own account. targetID "" means a new account;
// newRole "" means the role does not change.
func (s *Store) AuthorizeManageUser(actorID, targetID, newRole string) error {
	return s.view(func(txn *badger.Txn) error { return canManage(txn, actorID, targetID, newRole) })
}

// PrivilegedPermissions make a role privileged: only the Owner creates,
// changes or deletes the accounts that hold them, so that no Administrator
// can take over a Compliance Officer's account (or make another
// Administrator) and decide their own requests through it.
var PrivilegedPermissions = []Permission{PermCreateUsers, PermEditRoles, PermTriageRequests, PermManagePrivacyBudget}

func privileged(perms []Permission) bool {
	return slices.ContainsFunc(perms, func(p Permission) bool { return slices.Contains(PrivilegedPermissions, p) })
}

// canManage is AuthorizeManageUser in a transaction.
func canManage(txn *badger.Txn, actorID, targetID, newRole string) error {
	actor, err := getUser(txn, actorID)
	if err != nil {
		return err
	}
	have, err := rolePerms(txn, actor.Role)
	if err != nil {
		return err
	}
	if !slices.Contains(have, PermCreateUsers) {
		return fmt.Errorf("%w: %s needed", ErrForbidden, PermCreateUsers)
	}
	owner := actor.Role == RoleOwner
	if targetID != "" {
		target, err := getUser(txn, targetID)
		if err != nil {
			return err
		}
		if target.Role == RoleOwner && target.ID != actor.ID {
			return fmt.Errorf("%w: only the Owner may change the Owner's account", ErrForbidden)
		}
		tp, err := rolePerms(txn, target.Role)
		if err != nil && !errors.Is(err, ErrNotFound) {
			return err
		}
		if !subset(tp, have) {
			return fmt.Errorf("%w: the account's role %q has permissions you do not hold", ErrForbidden, target.Role)
		}
		if !owner && target.ID != actor.ID && privileged(tp) {
			return fmt.Errorf("%w: only the Owner may change or delete the account of a %s (its role holds a privileged permission)", ErrForbidden, target.Role)
		}
	}
	if newRole != "" && newRole != RoleOwner {
		np, err := rolePerms(txn, newRole)
		if errors.Is(err, ErrNotFound) {
			return invalid("role", "no role named %q", newRole)
		}
		if err != nil {
			return err
		}
		if !subset(np, have) {
			return fmt.Errorf("%w: role %q has permissions you do not hold", ErrForbidden, newRole)
		}
		if !owner && targetID != actor.ID && privileged(np) {
			return fmt.Errorf("%w: only the Owner may make an account a %s (the role holds a privileged permission)", ErrForbidden, newRole)
		}
	}
	return nil
}

func rolePerms(txn *badger.Txn, role string) ([]Permission, error) {
	r, err := getRole(txn, role)
	if err != nil {
		return nil, err
	}
	return r.Permissions, nil
}

func subset(want, have []Permission) bool {
	for _, p := range want {
		if !slices.Contains(have, p) {
			return false
		}
	}
	return true
}
