# Risk analytics against an independent numpy computation (tests/reference/risk_ref.py) on the
# CSV sample set, and the database path (tests/integration/risk_db.sh) on the local stack.
# The numpy tests need no service, only /usr/bin/python3 with numpy: label "unit". The database
# test is "integration" and exits 77 (SKIP) without KINFER_PG_DSN.
if(NOT TARGET kf_risk OR NOT TARGET kinfer)
    return()
endif()
find_program(KF_RISK_PYTHON NAMES python3 PATHS /usr/bin NO_DEFAULT_PATH)
if(NOT KF_RISK_PYTHON)
    set(KF_RISK_PYTHON /usr/bin/python3)
endif()
set(_rr_py ${CMAKE_SOURCE_DIR}/tests/reference/risk_ref.py)
set(_rr_dir ${CMAKE_BINARY_DIR}/tests/risk_ref)
set(_rr_csv ${_rr_dir}/csv)

# Fixture: numpy importable and the seeded sample set written as CSV.
add_test(NAME risk_ref_numpy COMMAND ${KF_RISK_PYTHON} -c "import numpy")
add_test(NAME risk_ref_sample_csv
    COMMAND $<TARGET_FILE:kinfer> sample-data --csv ${_rr_csv} --seed 42 --quiet)
set_tests_properties(risk_ref_numpy risk_ref_sample_csv PROPERTIES LABELS "unit"
    FIXTURES_SETUP risk_ref_data TIMEOUT 60)

# kf_risk_ref(name mode portfolio as_of window [extra args...])
function(kf_risk_ref name mode portfolio as_of window)
    add_test(NAME risk_ref_${name}
        COMMAND ${KF_RISK_PYTHON} ${_rr_py} ${mode} --kinfer $<TARGET_FILE:kinfer>
            --csv ${_rr_csv} --portfolio ${portfolio} --as-of ${as_of} --window ${window} ${ARGN})
    set_tests_properties(risk_ref_${name} PROPERTIES LABELS "unit"
        FIXTURES_REQUIRED risk_ref_data TIMEOUT 120 PASS_REGULAR_EXPRESSION "-> PASS")
endfunction()

# Every portfolio (bases USD, EUR, USD, GBP, CHF) on the last day with the default 500 returns,
# a Saturday as-of with a 250-day window, a short window, and the first possible window.
foreach(p P001 P002 P003 P004 P005)
    kf_risk_ref(${p}_latest check ${p} 2026-10-30 0)
endforeach()
kf_risk_ref(P003_saturday_w250 check P003 2025-06-14 250)
kf_risk_ref(P002_w60 check P002 2025-01-15 60)
kf_risk_ref(P004_w20 check P004 2024-03-01 20)
# Point in time: rows after the as-of date removed from the files -> byte-identical report.
kf_risk_ref(P001_point_in_time pit P001 2025-09-30 0)
kf_risk_ref(P005_point_in_time pit P005 2024-12-31 250)

# Negative controls: the comparison must notice a wrong definition (population covariance,
# another quantile rule, another EWMA decay) and report FAIL with mismatches counted.
foreach(m ddof0 kfloor lambda)
    add_test(NAME risk_ref_negative_${m}
        COMMAND ${KF_RISK_PYTHON} ${_rr_py} check --kinfer $<TARGET_FILE:kinfer> --csv ${_rr_csv}
            --portfolio P001 --as-of 2026-10-30 --window 0 --mutate ${m})
    set_tests_properties(risk_ref_negative_${m} PROPERTIES LABELS "unit"
        FIXTURES_REQUIRED risk_ref_data TIMEOUT 120
        PASS_REGULAR_EXPRESSION "[1-9][0-9]* over 1e-09")
endforeach()

# Database path: migrations, COPY load, idempotent reload, prepared-statement loader.
kf_add_test(NAME integration_risk_db LABELS integration TIMEOUT 300
    COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/risk_db.sh
    ARGS $<TARGET_FILE:kinfer> ${KF_RISK_PYTHON} ${_rr_py} ${CMAKE_SOURCE_DIR}/sql/migrate.sh
         ${CMAKE_BINARY_DIR}/tests/risk_db)
