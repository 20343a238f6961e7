CREATE TABLE connections (
	id VARCHAR(40) NOT NULL,
	owner VARCHAR(255) NOT NULL,
	kind VARCHAR(8) NOT NULL,
	region VARCHAR(8) NOT NULL,
	account_id VARCHAR(255) NOT NULL,
	subdomain TEXT,
	pd_user_id VARCHAR(255),
	pd_user_name TEXT,
	pd_user_email TEXT,
	delegation_id TEXT,
	scopes TEXT NOT NULL,
	status VARCHAR(16) NOT NULL,
	access_token_ct TEXT,
	refresh_token_ct TEXT,
	key_id VARCHAR(64),
	access_expires_at DOUBLE,
	refresh_expires_at DOUBLE,
	token_version INTEGER NOT NULL,
	lease_owner VARCHAR(255),
	lease_until DOUBLE,
	created_at DOUBLE NOT NULL,
	updated_at DOUBLE NOT NULL,
	last_refreshed_at DOUBLE,
	last_used_at DOUBLE,
	last_error_code VARCHAR(64),
	last_error_message TEXT,
	last_error_at DOUBLE,
	CONSTRAINT pk_connections PRIMARY KEY (id),
	CONSTRAINT ck_connections_kind CHECK (kind IN ('user', 'app')),
	CONSTRAINT ck_connections_region CHECK (region IN ('us', 'eu')),
	CONSTRAINT ck_connections_status CHECK (status IN ('active', 'needs_reauth', 'revoked')),
	CONSTRAINT ck_connections_user_id_matches_kind CHECK ((kind = 'user' AND pd_user_id IS NOT NULL) OR (kind = 'app' AND pd_user_id IS NULL)),
	CONSTRAINT ck_connections_token_version CHECK (token_version >= 1)
)
CREATE INDEX ix_connections_owner ON connections (owner)
CREATE INDEX ix_connections_refresh_expires_at ON connections (refresh_expires_at)
CREATE INDEX ix_connections_status ON connections (status)
CREATE UNIQUE INDEX uq_connections_app_grant ON connections (owner, kind, account_id) WHERE pd_user_id IS NULL
CREATE UNIQUE INDEX uq_connections_user_grant ON connections (owner, kind, account_id, pd_user_id) WHERE pd_user_id IS NOT NULL
CREATE TABLE pending_authorizations (
	state_hash VARCHAR(64) NOT NULL,
	owner VARCHAR(255) NOT NULL,
	binding_hash VARCHAR(128) NOT NULL,
	verifier_ct TEXT NOT NULL,
	redirect_uri TEXT NOT NULL,
	scopes TEXT NOT NULL,
	return_to TEXT,
	created_at DOUBLE NOT NULL,
	expires_at DOUBLE NOT NULL,
	CONSTRAINT pk_pending_authorizations PRIMARY KEY (state_hash)
)
CREATE INDEX ix_pending_authorizations_binding_hash ON pending_authorizations (binding_hash)
CREATE INDEX ix_pending_authorizations_expires_at ON pending_authorizations (expires_at)
CREATE INDEX ix_pending_authorizations_owner ON pending_authorizations (owner)
CREATE TABLE events (
	id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
	type VARCHAR(64) NOT NULL,
	connection_id VARCHAR(40),
	owner VARCHAR(255),
	data TEXT NOT NULL,
	created_at DOUBLE NOT NULL,
	delivered_at DOUBLE,
	attempts INTEGER NOT NULL,
	next_attempt_at DOUBLE,
	last_error TEXT
)
CREATE INDEX ix_events_connection_id ON events (connection_id)
CREATE INDEX ix_events_due ON events (next_attempt_at) WHERE delivered_at IS NULL
CREATE INDEX ix_events_owner ON events (owner)
CREATE TABLE admin_sessions (
	id_hash VARCHAR(64) NOT NULL,
	password_fingerprint VARCHAR(64) NOT NULL,
	created_at DOUBLE NOT NULL,
	last_seen_at DOUBLE NOT NULL,
	expires_at DOUBLE NOT NULL,
	CONSTRAINT pk_admin_sessions PRIMARY KEY (id_hash)
)
CREATE INDEX ix_admin_sessions_expires_at ON admin_sessions (expires_at)
CREATE TABLE pd_subscriptions (
	connection_id VARCHAR(40) NOT NULL,
	"key" VARCHAR(64) NOT NULL,
	state VARCHAR(16) NOT NULL,
	pd_subscription_id VARCHAR(64),
	secret_ct TEXT,
	events TEXT NOT NULL,
	attempts INTEGER NOT NULL,
	next_attempt_at DOUBLE,
	last_error TEXT,
	created_at DOUBLE NOT NULL,
	updated_at DOUBLE NOT NULL,
	CONSTRAINT pk_pd_subscriptions PRIMARY KEY (connection_id),
	CONSTRAINT uq_pd_subscriptions_key UNIQUE ("key")
)
CREATE TABLE pd_deliveries (
	webhook_id VARCHAR(128) NOT NULL,
	subscription_key VARCHAR(64) NOT NULL,
	connection_id VARCHAR(40) NOT NULL,
	received_at DOUBLE NOT NULL,
	CONSTRAINT pk_pd_deliveries PRIMARY KEY (webhook_id)
)
CREATE INDEX ix_pd_deliveries_received_at ON pd_deliveries (received_at)
