# libFuzzer target for the HTTP API's request validation (fuzz_api): outside bytes through the
# strict JSON parser and kf_api_request_build, as a single request and as a batch line. Built
# only with -DKF_FUZZ=ON (clang); the ctest run is bounded (20 s) over corpus/api/, new inputs
# go to a scratch folder in the build tree.
if(KF_FUZZ AND TARGET kf_producers)
    add_executable(fuzz_api ${CMAKE_CURRENT_LIST_DIR}/fuzz_api.c)
    target_link_libraries(fuzz_api PRIVATE kf_producers kf_core kf_warnings)
    target_link_options(fuzz_api PRIVATE -fsanitize=fuzzer)
    set(_kf_fz_work ${CMAKE_CURRENT_BINARY_DIR}/fuzz_api_corpus)
    file(MAKE_DIRECTORY ${_kf_fz_work})
    kf_add_test(NAME fuzz_api LABELS fuzz TIMEOUT 120
        COMMAND $<TARGET_FILE:fuzz_api>
        ARGS -max_total_time=20 -rss_limit_mb=2048 -timeout=10 -max_len=4096 -error_exitcode=1
             ${_kf_fz_work} ${CMAKE_CURRENT_LIST_DIR}/corpus/api)
endif()
