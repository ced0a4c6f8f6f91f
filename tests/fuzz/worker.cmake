# libFuzzer target for the inference worker's parsers (cancel records, InferenceJob records),
# built only with -DKF_FUZZ=ON (clang). The ctest run is bounded (20 s) over corpus/worker/;
# new inputs go to a scratch folder in the build tree.
if(KF_FUZZ AND TARGET kf_infer)
    add_executable(fuzz_worker ${CMAKE_CURRENT_LIST_DIR}/fuzz_worker.c)
    target_link_libraries(fuzz_worker PRIVATE kf_infer kf_warnings)
    target_link_options(fuzz_worker PRIVATE -fsanitize=fuzzer)
    set(_kf_fuzz_worker_work ${CMAKE_CURRENT_BINARY_DIR}/fuzz_worker_corpus)
    file(MAKE_DIRECTORY ${_kf_fuzz_worker_work})
    kf_add_test(NAME fuzz_worker LABELS fuzz TIMEOUT 120
        COMMAND $<TARGET_FILE:fuzz_worker>
        ARGS -max_total_time=20 -rss_limit_mb=2048 -timeout=10 -max_len=4096 -error_exitcode=1
             ${_kf_fuzz_worker_work} ${CMAKE_CURRENT_LIST_DIR}/corpus/worker)
endif()
