-- Read models of fhirstream. Every key leads with tenant_id, and every
-- table is hash-partitioned by tenant_id: a tenant's rows sit together, a
-- query with `tenant_id = $1` touches one partition, and adding tenant
-- 10,000 creates nothing (see docs/decisions.md). Leading tenant_id is also
-- what lets Citus distribute these tables by tenant.

-- Every version of every resource; the only copy of the JSON bodies.
create table resource_versions (
    tenant_id     text        not null,
    resource_type text        not null,
    id            text        not null,
    version       bigint      not null,
    op            text        not null check (op in ('create', 'update', 'delete')),
    last_updated  timestamptz not null,
    seq           bigint      not null,
    resource      jsonb,
    primary key (tenant_id, resource_type, id, version)
) partition by hash (tenant_id);

-- The current version of each resource: a pointer into resource_versions,
-- kept narrow so the upsert per event is cheap.
create table resources (
    tenant_id     text        not null,
    resource_type text        not null,
    id            text        not null,
    version       bigint      not null,
    deleted       boolean     not null,
    last_updated  timestamptz not null,
    seq           bigint      not null,
    primary key (tenant_id, resource_type, id)
) partition by hash (tenant_id);

do $$
begin
    for i in 0..15 loop
        execute format('create table resource_versions_p%s partition of resource_versions for values with (modulus 16, remainder %s)', lpad(i::text, 2, '0'), i);
        execute format('create table resources_p%s partition of resources for values with (modulus 16, remainder %s)', lpad(i::text, 2, '0'), i);
    end loop;
end
$$;

-- The stream sequence each projector has applied, written in the same
-- transaction as the rows it covers.
create table projector_checkpoints (
    projector  text        primary key,
    seq        bigint      not null,
    updated_at timestamptz not null default now()
);
