# Unit tests of the risk report renderers (risk/report*.c): canonical JSON bytes, HTML/SVG
# structure and coordinates, Markdown rows, escaping of hostile text, result mapping. No
# services needed.
if(TARGET kf_risk)
    kf_add_test(NAME unit_report SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_report.c
        LIBS kf_risk LABELS unit)
endif()
