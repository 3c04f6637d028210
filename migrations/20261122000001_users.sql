-- Accounts. Email is unique case-insensitively; the password is an argon2id PHC string.
CREATE TABLE users (
    id            uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    email         text        NOT NULL CHECK (length(email) BETWEEN 3 AND 254),
    password_hash text        NOT NULL,
    tier          text        NOT NULL DEFAULT 'standard' CHECK (tier IN ('standard', 'pro', 'elite')),
    created_at    timestamptz NOT NULL DEFAULT now()
);

CREATE UNIQUE INDEX users_email_lower_key ON users (lower(email));
