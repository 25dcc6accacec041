-- stg_item_licenses: the license of each candidate, inherited from its seed's dataset and decided by
-- `license_policy` (keyed by dataset_path). A dataset missing from the policy is unknown and never
-- commercial; the seed's own license text is kept for the record.
SELECT c.gen_id,
       s.dataset_path,
       coalesce(s.license, c.license, p.license, 'unknown') AS license,
       coalesce(p.license_class, s.license_class, c.license_class, 'unknown') AS license_class,
       coalesce(p.commercial_ok, 'unknown') AS commercial_ok,
       p.dataset_path IS NOT NULL AS in_policy,
       p.license AS policy_license,
       p.source_url AS policy_source_url
FROM stg_candidates c
LEFT JOIN ${table.seeds} s ON s.seed_id = c.seed_id
LEFT JOIN ${table.license_policy} p ON p.dataset_path = s.dataset_path
