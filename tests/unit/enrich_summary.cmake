# The {{risk.summary}} line that risk_report prompts hand to the demo model.
kf_add_test(NAME unit_enrich_summary SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_enrich_summary.c
    LIBS kf_consumers)
