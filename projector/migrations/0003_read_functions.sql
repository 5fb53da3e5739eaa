-- One-round-trip reads for the query side. Each function sets the tenant
-- for row-level security (transaction-local) and runs its query in the same
-- statement, so a read is one prepared call instead of BEGIN, set_config,
-- SELECT and COMMIT. They run as the caller (SECURITY INVOKER), i.e. as
-- fhirstream_reader under RLS, and still filter on tenant_id explicitly.

create function fhirstream_read(p_tenant text, p_type text, p_id text)
returns table (version bigint, op text, last_updated timestamptz, resource text)
language plpgsql volatile security invoker as $$
begin
    perform set_config('app.tenant', p_tenant, true);
    return query
        select v.version, v.op, v.last_updated, v.resource::text
        from resources r
        join resource_versions v
          on v.tenant_id = r.tenant_id and v.resource_type = r.resource_type
         and v.id = r.id and v.version = r.version
        where r.tenant_id = p_tenant and r.resource_type = p_type and r.id = p_id;
end
$$;

create function fhirstream_vread(p_tenant text, p_type text, p_id text, p_version bigint)
returns table (version bigint, op text, last_updated timestamptz, resource text)
language plpgsql volatile security invoker as $$
begin
    perform set_config('app.tenant', p_tenant, true);
    return query
        select v.version, v.op, v.last_updated, v.resource::text
        from resource_versions v
        where v.tenant_id = p_tenant and v.resource_type = p_type and v.id = p_id and v.version = p_version;
end
$$;

create function fhirstream_history(p_tenant text, p_type text, p_id text, p_count bigint)
returns table (version bigint, op text, last_updated timestamptz, resource text)
language plpgsql volatile security invoker as $$
begin
    perform set_config('app.tenant', p_tenant, true);
    return query
        select v.version, v.op, v.last_updated, v.resource::text
        from resource_versions v
        where v.tenant_id = p_tenant and v.resource_type = p_type and v.id = p_id
        order by v.version desc
        limit p_count;
end
$$;

grant execute on function fhirstream_read(text, text, text) to fhirstream_reader;
grant execute on function fhirstream_vread(text, text, text, bigint) to fhirstream_reader;
grant execute on function fhirstream_history(text, text, text, bigint) to fhirstream_reader;
