package sessions

import (
	"time"

	"github.com/chatguard/chatguard/internal/config"
)

// ConnectedUser is a connectedUsers entry: the seed's enriched user data.
type ConnectedUser struct {
	SocketID     string    `json:"socketId"`
	ConnectedAt  time.Time `json:"connectedAt"`
	LastActivity time.Time `json:"lastActivity"`
	Role         string    `json:"role"`
	DisplayName  string    `json:"displayName"`
}

// Standard holds the seed's four tables, made by NewStandard.
type Standard struct {
	// ConnectedUsers: user → connection.
	ConnectedUsers *Table[string, ConnectedUser]
	// ConversationUsers: conversation → its users (see Members: the
	// Registry owns the values).
	ConversationUsers *Table[string, Members]
	// EventRateLimits: rate-limit state per key (a GCRA theoretical arrival
	// time, a block's end, an abuse count), kept by fingerprint.
	EventRateLimits *StateTable
	// UserRoles: user → role.
	UserRoles *Table[string, string]
}

// StandardOptions let the owners of the tables react to evictions; nil = none.
type StandardOptions struct {
	OnConnectedUserEvicted func(user string, c ConnectedUser, r Reason)
	// EventVolatile reports eventRateLimits keys never saved to a file
	// (StateOptions.Volatile).
	EventVolatile func(key string) bool
}

// NewStandard makes the seed's tables in m, sized by cfg.
func NewStandard(m *Manager, cfg config.Tables, o StandardOptions) (*Standard, error) {
	var (
		s   Standard
		err error
	)
	if s.ConnectedUsers, err = NewManagedTable(m, TableConnectedUsers, Options[string, ConnectedUser]{
		MaxEntries: cfg.ConnectedUsers.MaxEntries, TTL: cfg.ConnectedUsers.TTL,
		OnEvict: o.OnConnectedUserEvicted,
		Size: func(k string, v ConnectedUser) int {
			return len(k) + len(v.SocketID) + len(v.Role) + len(v.DisplayName)
		},
	}); err != nil {
		return nil, err
	}
	if s.ConversationUsers, err = NewManagedTable(m, TableConversationUsers, Options[string, Members]{
		MaxEntries: cfg.ConversationUsers.MaxEntries, TTL: cfg.ConversationUsers.TTL,
		Size: func(k string, v Members) int {
			return len(k) + v.bytes
		},
	}); err != nil {
		return nil, err
	}
	if s.EventRateLimits, err = NewManagedStateTable(m, TableEventRateLimits, StateOptions{
		MaxEntries: cfg.EventRateLimits.MaxEntries, TTL: cfg.EventRateLimits.TTL,
		Volatile: o.EventVolatile,
	}); err != nil {
		return nil, err
	}
	if s.UserRoles, err = NewManagedTable(m, TableUserRoles, Options[string, string]{
		MaxEntries: cfg.UserRoles.MaxEntries, TTL: cfg.UserRoles.TTL,
	}); err != nil {
		return nil, err
	}
	return &s, nil
}
