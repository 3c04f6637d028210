-- Sign-in attempts reserve their failure row before the password is checked; a correct
-- password deletes its own row by id.
ALTER TABLE sign_in_failures ADD COLUMN id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY;
