-- Tenants read the shared space's rows of the types they opt into: the
-- query side sets `app.shared_types` (comma-separated) beside `app.tenant`
-- in the same transaction. Unset or empty, it matches nothing, so every
-- query written before sharing existed sees exactly what it saw.
drop policy tenant_rows on resources;
drop policy tenant_rows on resource_versions;
drop policy tenant_rows on search_values;

create policy tenant_rows on resources for select to fhirstream_reader
    using (tenant_id = current_setting('app.tenant', true)
           or (tenant_id = 'shared'
               and resource_type = any(string_to_array(nullif(current_setting('app.shared_types', true), ''), ','))));
create policy tenant_rows on resource_versions for select to fhirstream_reader
    using (tenant_id = current_setting('app.tenant', true)
           or (tenant_id = 'shared'
               and resource_type = any(string_to_array(nullif(current_setting('app.shared_types', true), ''), ','))));
create policy tenant_rows on search_values for select to fhirstream_reader
    using (tenant_id = current_setting('app.tenant', true)
           or (tenant_id = 'shared'
               and resource_type = any(string_to_array(nullif(current_setting('app.shared_types', true), ''), ','))));

-- Who holds a (type, id) across tenants: a write to the shared space must
-- not take an id that a tenant reading that type already uses.
create index resources_by_id on resources (resource_type, id) where tenant_id <> 'shared';
