# libFuzzer target for the risk CSV loader and the analytics behind it (fuzz_risk_csv), built
# only with -DKF_FUZZ=ON (clang). The ctest run is bounded (20 s) over corpus/risk_csv/; new
# inputs go to a scratch folder in the build tree. -error_exitcode=1: libFuzzer exits 77 on a
# crash by default, which ctest would report as SKIP.
if(KF_FUZZ AND TARGET kf_risk)
    add_executable(fuzz_risk_csv ${CMAKE_CURRENT_LIST_DIR}/fuzz_risk_csv.c)
    target_link_libraries(fuzz_risk_csv PRIVATE kf_risk kf_warnings)
    target_link_options(fuzz_risk_csv PRIVATE -fsanitize=fuzzer)
    set(_kf_rfz_work ${CMAKE_CURRENT_BINARY_DIR}/fuzz_risk_csv_corpus)
    file(MAKE_DIRECTORY ${_kf_rfz_work})
    kf_add_test(NAME fuzz_risk_csv LABELS fuzz TIMEOUT 120
        COMMAND $<TARGET_FILE:fuzz_risk_csv>
        ARGS -max_total_time=20 -rss_limit_mb=2048 -timeout=10 -max_len=8192 -error_exitcode=1
             ${_kf_rfz_work} ${CMAKE_CURRENT_LIST_DIR}/corpus/risk_csv)
endif()
