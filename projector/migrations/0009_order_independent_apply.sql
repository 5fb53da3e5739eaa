-- The batch function of 0007, made order-independent so that several
-- writers may apply events at once: projector lanes on their own
-- connections, and a write that applies its own event on the request path
-- for read-your-writes (docs/decisions.md, "Projection lanes").
--
-- What changes:
-- * Only a resource whose `resources` row this call actually moved (the
--   upsert's RETURNING: inserted, or updated because the version is newer)
--   gets its index rows replaced. An older version applied after a newer
--   one, or the same version applied twice (the projector after a direct
--   apply, a redelivery), leaves the index alone. The row lock the upsert
--   takes orders two writers of one resource: the second waits for the
--   first to commit and then finds its version no longer newer.
-- * `p_projector` may be NULL: no sequence guard and no checkpoint. The
--   caller either moves a checkpoint itself once every part of a batch has
--   committed (lanes), or has none (the direct apply). Applying an event
--   twice changes nothing (the version guards above), so that is safe.
drop function fhirstream_apply_batch(
    text, bigint,
    text[], text[], text[], int8[], text[], timestamptz[], int8[], text[],
    text[], text[], text[], int8[], bool[], timestamptz[], int8[],
    text[], text[], text[], int8[], text[], text[], text[], text[], text[], text[], text[],
    timestamptz[], timestamptz[], text[], text[], text[]);

create function fhirstream_apply_batch(
    p_projector text, p_checkpoint bigint,
    v_tenant text[], v_type text[], v_id text[], v_version int8[], v_op text[], v_at timestamptz[], v_seq int8[],
    v_resource text[],
    c_tenant text[], c_type text[], c_id text[], c_version int8[], c_deleted bool[], c_at timestamptz[], c_seq int8[],
    x_tenant text[], x_type text[], x_id text[], x_seq int8[], x_param text[], x_kind text[], x_text_norm text[],
    x_text_exact text[], x_system text[], x_code text[], x_unit text[], x_lo timestamptz[], x_hi timestamptz[],
    x_num text[], x_ref_type text[], x_ref_id text[]
) returns void
language plpgsql
set plan_cache_mode = force_generic_plan
set enable_seqscan = off
as $$
declare
    cp bigint := 0;
    m_tenant text[];
    m_type text[];
    m_id text[];
    m_version int8[];
    m_seq int8[];
begin
    if p_projector is not null then
        select coalesce(max(seq), 0) into cp from projector_checkpoints where projector = p_projector;
    end if;

    -- Versions already stored (a direct apply got there first) are left
    -- out before their bodies are parsed into jsonb, the dearest part.
    insert into resource_versions (tenant_id, resource_type, id, version, op, last_updated, seq, resource)
    select t, rt, i, v, o, lu, s, r::jsonb
    from unnest(v_tenant, v_type, v_id, v_version, v_op, v_at, v_seq, v_resource) as x(t, rt, i, v, o, lu, s, r)
    where x.s > cp
      and not exists (select 1 from resource_versions o
                      where o.tenant_id = x.t and o.resource_type = x.rt and o.id = x.i and o.version = x.v)
    on conflict do nothing;

    with moved as (
        insert into resources (tenant_id, resource_type, id, version, deleted, last_updated, seq)
        select t, rt, i, v, d, lu, s
        from unnest(c_tenant, c_type, c_id, c_version, c_deleted, c_at, c_seq) as y(t, rt, i, v, d, lu, s)
        where y.s > cp
          -- Not even locked when a committed row is as new: a conflicting
          -- upsert locks the row although its WHERE fails.
          and not exists (select 1 from resources o
                          where o.tenant_id = y.t and o.resource_type = y.rt and o.id = y.i and o.version >= y.v)
        on conflict (tenant_id, resource_type, id) do update
        set version = excluded.version, deleted = excluded.deleted,
            last_updated = excluded.last_updated, seq = excluded.seq
        where resources.version < excluded.version
        returning tenant_id, resource_type, id, version, seq
    )
    select array_agg(tenant_id), array_agg(resource_type), array_agg(id), array_agg(version), array_agg(seq)
    into m_tenant, m_type, m_id, m_version, m_seq
    from moved;

    -- A first version replaces nothing, so only later ones look for old
    -- index rows (a batch of creates, as in an import, looks for none).
    for k in 1 .. coalesce(array_length(m_tenant, 1), 0) loop
        if m_version[k] > 1 then
            delete from search_values
            where tenant_id = m_tenant[k] and resource_type = m_type[k] and id = m_id[k];
        end if;
    end loop;

    if m_tenant is not null then
        insert into search_values (tenant_id, resource_type, id, seq, param, kind, text_norm, text_exact,
                                   system, code, unit, lo, hi, num, ref_type, ref_id)
        select w.t, w.rt, w.i, w.s, p, k::"char", tn, te, sy, co, un, lo, hi, nu::numeric, ryt, ryi
        from unnest(x_tenant, x_type, x_id, x_seq, x_param, x_kind, x_text_norm, x_text_exact, x_system, x_code,
                    x_unit, x_lo, x_hi, x_num, x_ref_type, x_ref_id)
             as w(t, rt, i, s, p, k, tn, te, sy, co, un, lo, hi, nu, ryt, ryi)
        join unnest(m_tenant, m_type, m_id, m_seq) as m(t, rt, i, s)
          on m.t = w.t and m.rt = w.rt and m.i = w.i and m.s = w.s;
    end if;

    if p_projector is not null then
        update projector_checkpoints set seq = greatest(seq, p_checkpoint), updated_at = now()
        where projector = p_projector;
    end if;
end
$$;
