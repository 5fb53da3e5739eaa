-- The projector's batch as one function call. It used to be one statement
-- of data-modifying CTEs, planned afresh for every batch
-- (plan_cache_mode = force_custom_plan) because a generic plan of its
-- delete, a join of the batch's keys with every search_values partition,
-- could be made while the tables were empty and then scan millions of rows.
-- Planning that statement cost more than executing it for a batch of a few
-- events (docs/findings.md). Here every statement has one plan per session
-- (the SETs below). The only one that reads a table, the delete of a
-- resource's old index rows, is a lookup by its whole key, and sequential
-- scans are off so that a plan made while a partition was empty (seen:
-- a seq scan, 5 ms per resource once it held a few thousand rows) can
-- never be the plan; the index is always the right one for a key lookup.
--
-- The sequence guard is the statement's own: events at or below the
-- checkpoint were applied before and change nothing; the checkpoint moves
-- in the same transaction as the rows.
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
    cp bigint;
begin
    select seq into cp from projector_checkpoints where projector = p_projector;

    insert into resource_versions (tenant_id, resource_type, id, version, op, last_updated, seq, resource)
    select t, rt, i, v, o, lu, s, r::jsonb
    from unnest(v_tenant, v_type, v_id, v_version, v_op, v_at, v_seq, v_resource) as x(t, rt, i, v, o, lu, s, r)
    where x.s > cp
    on conflict do nothing;

    insert into resources (tenant_id, resource_type, id, version, deleted, last_updated, seq)
    select t, rt, i, v, d, lu, s
    from unnest(c_tenant, c_type, c_id, c_version, c_deleted, c_at, c_seq) as y(t, rt, i, v, d, lu, s)
    where y.s > cp
    on conflict (tenant_id, resource_type, id) do update
    set version = excluded.version, deleted = excluded.deleted,
        last_updated = excluded.last_updated, seq = excluded.seq
    where resources.version < excluded.version;

    -- A first version replaces nothing, so only later ones look for old
    -- index rows (a batch of creates, as in an import, looks for none).
    for k in 1 .. coalesce(array_length(c_tenant, 1), 0) loop
        if c_version[k] > 1 and c_seq[k] > cp then
            delete from search_values
            where tenant_id = c_tenant[k] and resource_type = c_type[k] and id = c_id[k];
        end if;
    end loop;

    insert into search_values (tenant_id, resource_type, id, seq, param, kind, text_norm, text_exact,
                               system, code, unit, lo, hi, num, ref_type, ref_id)
    select t, rt, i, s, p, k::"char", tn, te, sy, co, un, lo, hi, nu::numeric, ryt, ryi
    from unnest(x_tenant, x_type, x_id, x_seq, x_param, x_kind, x_text_norm, x_text_exact, x_system, x_code,
                x_unit, x_lo, x_hi, x_num, x_ref_type, x_ref_id)
         as w(t, rt, i, s, p, k, tn, te, sy, co, un, lo, hi, nu, ryt, ryi)
    where w.s > cp;

    update projector_checkpoints set seq = greatest(seq, p_checkpoint), updated_at = now()
    where projector = p_projector;
end
$$;
