# Unit tests of risk/ (kf_risk): analytics worked out by hand on tiny portfolios, and the CSV
# loader and sample generator. The numpy parity tests live in tests/integration/risk.cmake.
if(TARGET kf_risk)
    kf_add_test(NAME unit_risk SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_risk.c LIBS kf_risk)
    kf_add_test(NAME unit_risk_csv SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_risk_csv.c
        LIBS kf_risk)
endif()
