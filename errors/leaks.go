package errors

// What of an upstream's error text may reach a client: database, class,
// stack and path recognisers.

import (
	"regexp"
	"strings"
)

// leaksDatabase recognises a database driver's or ORM's own error text in a
// message (MongoDB and Mongoose, MySQL ER_… codes, PostgreSQL, SQLite,
// Sequelize, Prisma, TypeORM), which quotes tables, indexes, columns and the
// values that collided.
func leaksDatabase(s string) bool {
	return databaseText.MatchString(s)
}

var databaseText = regexp.MustCompile(strings.Join([]string{
	`Mongo[A-Za-z]*Error`, `E11000`, // MongoServerError, MongoError, MongoBulkWriteError, MongooseError
	// MySQL/MariaDB error codes as drivers write them ("ER_DUP_ENTRY: …"),
	// the usual ones anywhere; SQLite result codes. Not an app's own codes
	// that happen to start with ER_ ("Coupon code ER_2024 is not valid").
	`\bER_[A-Z][A-Z0-9_]*:`, `\bER_(?:DUP_ENTRY|PARSE_ERROR|NO_SUCH_TABLE|BAD_FIELD_ERROR|ROW_IS_REFERENCED|NO_REFERENCED_ROW)`, `SQLITE_`,
	`Sequelize`, `QueryFailedError`, `TypeORM`,
	`Prisma`, "`prisma\\.", `^P[12][0-9]{3}\b`, `\bP[12][0-9]{3}:`, `Unique constraint failed on the`, // Prisma P1xxx/P2xxx
	`relation "[^"]*" (?:does not exist|already exists)`, `column "[^"]*" (?:does not exist|of relation)`, // PostgreSQL
	`duplicate key value violates`, `violates (?:foreign key|unique|not-null|check|exclusion) constraint`,
	`syntax error at (?:or near|end of input)`, `invalid input syntax for`, `(?i:sqlstate)`,
	// A query itself, as drivers and query builders quote it: in capitals
	// with a star, a function, DISTINCT or a quoted or qualified column
	// before FROM and the table at the end or before a clause ("SELECT
	// COUNT(*) FROM messages"), or any column before a clause; not "PLEASE
	// SELECT ONE FROM THE LIST", "I SELECT pizza FROM the menu", "Please
	// SELECT a file FROM disk". In either case with a quoted table (knex's
	// select "id" from "users") or a clause that reads as SQL ("select *
	// from users where id = 1", not "select messages from users left in
	// the room"). A bare "DELETE FROM t" only as the whole text.
	`\bSELECT\s+(?:\*|DISTINCT\b|[A-Z]+\(|["` + "`" + `]|[a-z_]+\.).{0,200}?\sFROM\s+` + sqlName + `\s*(?:$|[;)]|(?:WHERE|JOIN|INNER|LEFT|RIGHT|OUTER|ORDER|GROUP|LIMIT|OFFSET|HAVING|UNION|AS|ON)\b)`,
	`\bSELECT\s+[a-z_].{0,200}?\sFROM\s+` + sqlName + `\s+(?:WHERE|JOIN|INNER|LEFT|RIGHT|ORDER|GROUP|LIMIT)\b`,
	`(?i:\bselect\s.{1,200}?\sfrom\s+` + sqlQuoted + `)`,
	`(?i:\bselect\s.{1,200}?\sfrom\s+` + sqlName + `\s+(?:` + sqlClause + `))`,
	`(?i:\binsert\s+into\s+` + sqlName + `\s*(?:\(|values\b|select\b))`,
	`(?i:\bupdate\s+` + sqlName + `\s+set\s+` + sqlName + `\s*=)`,
	`\bDELETE\s+FROM\s+` + sqlName + `\s*(?:WHERE\b|RETURNING\b|USING\b)`, `^DELETE\s+FROM\s+` + sqlName + `\s*;?$`,
	`(?i:\bdelete\s+from\s+` + sqlQuoted + `)`,
	`(?i:\bdelete\s+from\s+` + sqlName + `\s+(?:` + sqlClause + `))`,
	// Drivers' own words. MySQL:
	`error in your SQL syntax`, `Unknown column '`, `Table '[^']*' doesn't exist`, `Column '[^']*' cannot be null`,
	`Data truncated for column`, `Data too long for column '`, `Incorrect \w+ value: '.*' for column`, `Unknown database '`,
	`Field '[^']*' doesn't have a default value`, `a foreign key constraint fails`, `Access denied for user '`,
	// PostgreSQL:
	`Failing row contains`, `value too long for type `, `password authentication failed for user`,
	`database "[^"]*" does not exist`, `permission denied for (?:table|relation|schema|database|sequence|function) `,
	`operator does not exist: `, `invalid input value for enum `, `bind message supplies \d+ parameters?`,
	`no unique or exclusion constraint matching`, `current transaction is aborted`,
	// SQLite:
	`\b(?:UNIQUE|NOT NULL|CHECK|FOREIGN KEY|PRIMARY KEY) constraint failed`, `no such (?:table|column): [A-Za-z_]`,
	`table \S+ has no column named `, `near "[^"]*": syntax error`,
	// The MongoDB driver, Prisma, Sequelize, knex, Redis (not Mongoose's
	// validation messages, "Path `email` is required.", which are the
	// app's to show):
	`buffering timed out after`,
	`Foreign key constraint failed on the field`, `Can't reach database server at`,
	"The (?:table|column) `[^`]*` does not exist in the current database",
	`notNull Violation: `, `Knex: Timeout acquiring a connection`, `\bWRONGPASS\b`, `\bNOAUTH\b`,
	// A connection's failure names the internal address it went to.
	`\b(?:connect|getaddrinfo|read|write) (?:ECONNREFUSED|ETIMEDOUT|EHOSTUNREACH|ENOTFOUND|ECONNRESET|EPIPE)\b`,
	// MySQL's and PostgreSQL's texts that quote the colliding value.
	`Duplicate entry '.*' for key`, `Key \([^)]*\)=\(`,
}, "|"))

const (
	// sqlName is a table or column name as a query writes it.
	sqlName = `[\w."` + "`" + `]+`
	// sqlQuoted is one quoted as a query builder quotes it ("users",
	// `users`, "public"."users").
	sqlQuoted = `(?:"[\w.]+"|` + "`[\\w.]+`" + `)`
	// sqlClause is what follows the table in a query and not in a sentence:
	// a join, a condition with an operator, an ordering, a limit.
	sqlClause = `(?:left|right|inner|full|cross)\s+(?:outer\s+)?join\b|join\s+` + sqlName + `\s+on\b` +
		`|where\s+(?:not\s+|\(\s*)*(?:\w+\()?` + sqlName + `\)?\s*(?:[=<>!]|\bin\s*\(|\bis\s+(?:not\s+)?null\b|\blike\b|\bbetween\b)` +
		`|where\s+not\s+` + sqlName +
		`|order\s+by\s+` + sqlName + `|group\s+by\s+` + sqlName + `|limit\s+(?:\d|\$|\?)`
)

// errorClass recognises an error class name as err.toString() and
// util.inspect write it: "Error: boom" (at the start), "TypeError: …",
// "SequelizeUniqueConstraintError: …" (one word); not an app's own words
// ("Validation Error: email is required", "Payment Error: card declined").
var errorClass = regexp.MustCompile(`^Error:|\b[A-Z][A-Za-z0-9_$]*[a-z0-9_$](?:Error|Exception):`)

// leaksInternalText reports whether a message an upstream wrote shows its
// internals: stack frames, file paths, a database's own error text or an
// error class name. Such a message is replaced, never cut.
func leaksInternalText(s string) bool {
	return leaksInternals(s) || leaksDatabase(s) || errorClass.MatchString(s)
}

// fieldMessage replaces a validation field's message that shows internals.
const fieldMessage = "Invalid value"

// dropStacks takes the internals out of an envelope's members, in place:
// stack members go, and a string loses its stack frames and file paths;
// one that still shows internals (a database's own text, a query) is
// replaced by removedText. Codes (any "code" member: error.code,
// a driver's ER_DUP_ENTRY) are names a client branches on and are kept.
// It reports whether anything changed.
func dropStacks(v any) bool {
	changed := false
	switch t := v.(type) {
	case map[string]any:
		for k, val := range t {
			switch strings.ToLower(k) {
			case "stack", "stacktrace", "trace":
				delete(t, k)
				changed = true
				continue
			case "code":
				continue
			}
			if s, ok := val.(string); ok {
				if c := withoutInternals(s); c != s {
					t[k] = c
					changed = true
				}
				continue
			}
			changed = dropStacks(val) || changed
		}
	case []any:
		for i, val := range t {
			if s, ok := val.(string); ok {
				if c := withoutInternals(s); c != s {
					t[i] = c
					changed = true
				}
				continue
			}
			changed = dropStacks(val) || changed
		}
	}
	return changed
}

// removedText replaces a string of an upstream envelope that shows a
// database's own error text or a query, in production.
const removedText = "[REMOVED]"

// withoutInternals is s without stack frames, and with its file paths
// replaced by "[path]"; removedText if it still shows a database's text
// or a query. URLs are not paths (https://cdn.example.com/app/x.js), nor
// are an app's routes (/api/home/feed): a path is a token that starts at
// a server directory, or names node_modules or a script's line.
func withoutInternals(s string) string {
	if !strings.Contains(s, "\n") && !stackFrame.MatchString(s) && !filePath.MatchString(s) && !fsErrorPath.MatchString(s) && !leaksDatabase(s) {
		return s
	}
	c := cutStack(s)
	c = fsErrorPath.ReplaceAllString(c, "$1 '[path]'")
	c = filePath.ReplaceAllStringFunc(c, func(m string) string {
		token := strings.TrimLeft(m, " \t\n'\"(=:[,")
		if webURL.MatchString(token) {
			return m
		}
		return m[:len(m)-len(token)] + "[path]"
	})
	if leaksDatabase(c) || stackFrame.MatchString(c) {
		return removedText
	}
	return c
}

// webURL is a link a client may follow (not webpack:///src/x.ts:12).
var webURL = regexp.MustCompile(`^(?i:https?|wss?)://`)

// fsErrorPath is the path a Node fs error quotes, relative or not
// ("ENOENT: no such file or directory, open 'uploads/a.png'").
var fsErrorPath = regexp.MustCompile(`\b(open|stat|lstat|scandir|mkdir|rmdir|unlink|rename|access|readlink|copyfile|chmod|opendir|realpath) '[^']+'`)

// filePath finds a file path, with the delimiter before it: a token that
// starts at a system directory (/etc/passwd, /usr/…), or at one an app's
// routes may share a name with (app, home, Users, data, private…) and
// names a source or configuration file (/app/server.js, /app/.env) or goes
// three levels down (/home/node/app/dist); with file:// or not; a Windows
// drive (C:\…, C:/dir/…), a file:/// URL, a home-relative ~/ path,
// Docker's /run/secrets/…, or one that holds node_modules or a script's
// line (/src/server.mjs:12, x.ts:12:4). A route under such a directory
// (?next=/home/feed/42, "moved to /app/settings", /data/export.csv,
// /Users/42) is not a path.
var filePath = regexp.MustCompile(`(?:^|[\s'"(=:\[,])(?:(?:file://)?(?:` +
	`/(?:` + systemDirs + `)/` + pathSegment + pathRest + `|/run/secrets/` + pathRest +
	`|/(?:` + routeLikeDirs + `)/(?:` + pathSegment + `/){2,}` + pathSegment +
	`|/(?:` + routeLikeDirs + `)/(?:` + pathSegment + `/)*[^\s'"()<>,;?#/]*\.(?:` + codeExts + `)\b` + pathRest + `)` +
	`|file:///` + pathRest + `|[A-Za-z]:\\` + pathRest + `|[A-Za-z]:/` + pathSegment + `/` + pathRest + `|~/` + pathSegment + pathRest + `)` +
	`|` + pathRest + `(?:node_modules|[/\\]` + pathRest + `\.[cm]?[jt]sx?:[0-9]|\.[cm]?[jt]sx?:[0-9]+:[0-9])` + pathRest)

const (
	systemDirs    = `usr|srv|opt|var|tmp|root|etc|workspace|builds|snap|nix`
	routeLikeDirs = `app|home|Users|code|data|src|lib|run|mnt|private|proc|sys|dist|build`
	codeExts      = `[cm]?[jt]sx?|json|env|ya?ml|toml|ini|conf|cfg|config|db|sqlite3?|wt|log|pem|key|crt|sh|py|rb|go|node|map|lock|sql`
	pathSegment   = `[^\s'"()<>,;?#/]+`
	pathRest      = `[^\s'"()<>,;]*`
)

// leaksInternals reports whether s shows a stack or a file path.
func leaksInternals(s string) bool {
	return strings.Contains(s, "node_modules") || stackFrame.MatchString(s) || strings.Contains(s, "\n    at ") ||
		strings.Contains(s, "\n  at ") || filePath.MatchString(s) || fsErrorPath.MatchString(s)
}

func upperSnake(s string) bool {
	if s == "" || s[0] < 'A' || s[0] > 'Z' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

// nodeSystemErrors are libuv's error codes as Node reports them.
var nodeSystemErrors = map[string]bool{
	"ECONNREFUSED": true, "ECONNRESET": true, "ECONNABORTED": true, "ETIMEDOUT": true, "ENOTFOUND": true,
	"EAI_AGAIN": true, "EPIPE": true, "EHOSTUNREACH": true, "ENETUNREACH": true, "EADDRINUSE": true,
	"EACCES": true, "EPERM": true, "ENOENT": true, "EEXIST": true, "EMFILE": true, "EISDIR": true,
	"ENOTDIR": true, "EBADF": true, "EINVAL": true, "ENOMEM": true, "ENOSPC": true, "EPROTO": true,
}
