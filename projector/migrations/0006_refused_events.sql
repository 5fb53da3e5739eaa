-- Commits PostgreSQL refused to store (a data error such as a NUL character
-- jsonb cannot hold, or a program limit such as an index row too large).
-- The projector records them here and moves its checkpoint past them in the
-- same transaction, so one bad event cannot block its tenant forever; an
-- operator reads this table to find what the read model left out.
create table refused_events (
    projector     text        not null,
    seq           bigint      not null,
    tenant_id     text        not null,
    subject       text        not null,
    resource_type text        not null,
    id            text        not null,
    version       bigint      not null,
    sqlstate      text        not null,
    error         text        not null,
    refused_at    timestamptz not null default now(),
    primary key (projector, seq)
);
