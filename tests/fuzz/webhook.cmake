# libFuzzer target for the webhook parsers of outside bytes (Retry-After, signature headers,
# secrets, allowlists, URLs, schedules), built only with -DKF_FUZZ=ON (clang). The ctest run is
# bounded (20 s) over the seed corpus in corpus/webhook/; new inputs go to the build tree.
if(KF_FUZZ AND TARGET kf_consumers)
    add_executable(fuzz_webhook ${CMAKE_CURRENT_LIST_DIR}/fuzz_webhook.c)
    target_link_libraries(fuzz_webhook PRIVATE kf_consumers kf_warnings)
    target_link_options(fuzz_webhook PRIVATE -fsanitize=fuzzer)
    set(_kf_fz_work ${CMAKE_CURRENT_BINARY_DIR}/fuzz_webhook_corpus)
    file(MAKE_DIRECTORY ${_kf_fz_work})
    kf_add_test(NAME fuzz_webhook LABELS fuzz TIMEOUT 120
        COMMAND $<TARGET_FILE:fuzz_webhook>
        ARGS -max_total_time=20 -rss_limit_mb=2048 -timeout=10 -max_len=4096 -error_exitcode=1
             ${_kf_fz_work} ${CMAKE_CURRENT_LIST_DIR}/corpus/webhook)
endif()
