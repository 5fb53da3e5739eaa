-- The search index: one row per value a live resource holds for a search
-- parameter, extracted at projection time (schemas::search::index). Rows of
-- a resource are replaced whenever its current version changes and removed
-- when it is deleted, so the index only ever describes current versions.
--
-- One table for every parameter type keeps the projector at one delete and
-- one insert per batch; `kind` says which columns a row uses, and partial
-- indexes serve each type:
--   s string     text_norm (normalised), text_exact
--   t token      system, code, text_norm (normalised display / text)
--   d date       lo, hi (half-open range at the value's precision)
--   r reference  ref_type, ref_id (when Type/id), text_exact (as written)
--   n number     num
--   q quantity   num, system, code, unit
--   u uri        text_exact
create table search_values (
    tenant_id     text        not null,
    resource_type text        not null,
    id            text        not null,
    seq           bigint      not null,
    param         text        not null,
    kind          "char"      not null,
    text_norm     text,
    text_exact    text,
    system        text,
    code          text,
    unit          text,
    lo            timestamptz,
    hi            timestamptz,
    num           numeric,
    ref_type      text,
    ref_id        text
) partition by hash (tenant_id);

do $$
begin
    for i in 0..15 loop
        execute format('create table search_values_p%s partition of search_values for values with (modulus 16, remainder %s)', lpad(i::text, 2, '0'), i);
    end loop;
end
$$;

create index search_values_resource on search_values (tenant_id, resource_type, id, param);
create index search_values_string on search_values (tenant_id, resource_type, param, text_norm text_pattern_ops) where kind = 's';
-- `id` last: a correlated probe ("does this resource have code X?") is then
-- all equalities on one index, instead of a scan of every resource with X.
create index search_values_token on search_values (tenant_id, resource_type, param, code, system, id) where kind = 't';
create index search_values_date on search_values (tenant_id, resource_type, param, lo, hi) where kind = 'd';
create index search_values_reference on search_values (tenant_id, ref_type, ref_id, param, resource_type, id) where kind = 'r';
create index search_values_number on search_values (tenant_id, resource_type, param, num) where kind in ('n', 'q');
create index search_values_uri on search_values (tenant_id, resource_type, param, text_exact) where kind = 'u';

-- Keyset paging and sorting by id or _lastUpdated within a type.
create index resources_type_updated on resources (tenant_id, resource_type, last_updated, id);
-- Type- and system-level history in stream order.
create index resource_versions_seq on resource_versions (tenant_id, seq);

grant select on search_values to fhirstream_reader;
alter table search_values enable row level security;
alter table search_values force row level security;
create policy tenant_rows on search_values for select to fhirstream_reader
    using (tenant_id = current_setting('app.tenant', true));
create policy projector_rows on search_values to fhirstream_writer using (true) with check (true);
