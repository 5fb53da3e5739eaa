-- The tenant registry's read model, and row-level security on every
-- tenant-scoped table as defence in depth for the query side.

create table tenants (
    id         text        primary key,
    name       text        not null,
    config     jsonb       not null,
    created_at timestamptz not null,
    updated_at timestamptz not null,
    seq        bigint      not null
);

-- Roles are cluster-wide, so several databases (and test runs) share them.
do $$
begin
    if not exists (select from pg_roles where rolname = 'fhirstream_reader') then
        -- The query side: owns nothing, cannot bypass RLS, sees one tenant.
        create role fhirstream_reader nologin nobypassrls;
    end if;
    if not exists (select from pg_roles where rolname = 'fhirstream_writer') then
        -- The projector when it is not a superuser: writes every tenant.
        create role fhirstream_writer nologin;
    end if;
end
$$;

grant fhirstream_reader to current_user;
grant fhirstream_writer to current_user;
grant usage on schema public to fhirstream_reader;
grant select on resources, resource_versions to fhirstream_reader;

alter table resources enable row level security;
alter table resources force row level security;
alter table resource_versions enable row level security;
alter table resource_versions force row level security;

-- `app.tenant` is set per transaction (set_config(.., true)) by the query
-- side; unset, it is NULL and matches nothing.
create policy tenant_rows on resources for select to fhirstream_reader
    using (tenant_id = current_setting('app.tenant', true));
create policy tenant_rows on resource_versions for select to fhirstream_reader
    using (tenant_id = current_setting('app.tenant', true));
create policy projector_rows on resources to fhirstream_writer using (true) with check (true);
create policy projector_rows on resource_versions to fhirstream_writer using (true) with check (true);
