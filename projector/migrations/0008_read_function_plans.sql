-- The read functions of 0003 were planned afresh on every call: under the
-- default plan_cache_mode PostgreSQL compares a generic plan's estimated
-- cost with a custom plan's, and a generic plan over partitioned tables
-- looks dearer because it cannot prune partitions when it is made (it
-- prunes them when it runs). So every read paid ~0.7 ms of planning for a
-- ~0.05 ms lookup (docs/findings.md). A generic plan is made once per
-- session; sequential scans are off so that one made while a partition
-- was empty can never be a scan, as in 0007.
alter function fhirstream_read(text, text, text) set plan_cache_mode = force_generic_plan;
alter function fhirstream_read(text, text, text) set enable_seqscan = off;
alter function fhirstream_vread(text, text, text, bigint) set plan_cache_mode = force_generic_plan;
alter function fhirstream_vread(text, text, text, bigint) set enable_seqscan = off;
alter function fhirstream_history(text, text, text, bigint) set plan_cache_mode = force_generic_plan;
alter function fhirstream_history(text, text, text, bigint) set enable_seqscan = off;
