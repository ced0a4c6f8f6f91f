# libFuzzer target for the risk report renderers and the InferenceResult mapping
# (fuzz_report), built only with -DKF_FUZZ=ON (clang). Bounded ctest run (20 s) over
# corpus/report/; -error_exitcode=1 so a crash is a failure, not libFuzzer's 77 (= SKIP).
if(KF_FUZZ AND TARGET kf_risk)
    add_executable(fuzz_report ${CMAKE_CURRENT_LIST_DIR}/fuzz_report.c)
    target_link_libraries(fuzz_report PRIVATE kf_risk kf_warnings)
    target_link_options(fuzz_report PRIVATE -fsanitize=fuzzer)
    set(_kf_rpfz_work ${CMAKE_CURRENT_BINARY_DIR}/fuzz_report_corpus)
    file(MAKE_DIRECTORY ${_kf_rpfz_work})
    kf_add_test(NAME fuzz_report LABELS fuzz TIMEOUT 120
        COMMAND $<TARGET_FILE:fuzz_report>
        ARGS -max_total_time=20 -rss_limit_mb=2048 -timeout=10 -max_len=16384 -error_exitcode=1
             ${_kf_rpfz_work} ${CMAKE_CURRENT_LIST_DIR}/corpus/report)
endif()
