-- filter_license: may this item feed a commercial training run? It inherits its seed's dataset license
-- (stg_item_licenses); `license_policy.commercial_ok = 'yes'` is the only way through. Everything else
-- fails with the reason, first match wins: 'unknown_license' (dataset not in the policy, or class
-- unknown), 'non_commercial', 'no_derivatives', 'other_license', 'commercial_use_unknown' (the policy
-- does not know), 'not_commercial' (the policy says no). This filter gates `curated_commercial`,
-- not `curated`. evidence: dataset_path, license, class, commercial_ok, the policy's source.
SELECT gen_id,
       'license' AS filter,
       coalesce(commercial_ok = 'yes', false) AS passed,
       CASE WHEN commercial_ok = 'yes' THEN 'commercial_ok'
            WHEN NOT in_policy OR license_class = 'unknown' THEN 'unknown_license'
            WHEN license_class = 'non-commercial' THEN 'non_commercial'
            WHEN license_class = 'no-derivatives' THEN 'no_derivatives'
            WHEN license_class = 'other' THEN 'other_license'
            WHEN commercial_ok = 'unknown' THEN 'commercial_use_unknown'
            ELSE 'not_commercial' END AS reason,
       CAST(NULL AS DOUBLE) AS score,
       to_json(named_struct('dataset_path', dataset_path, 'license', license, 'license_class', license_class,
                            'commercial_ok', commercial_ok, 'policy_source', policy_source_url)) AS evidence
FROM stg_item_licenses
