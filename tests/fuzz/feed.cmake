# libFuzzer target for the market feed line parsers (producers/feed_parse.c), built only with
# -DKF_FUZZ=ON (clang). The ctest run is bounded (20 s) over the seeds in corpus/feed/ (first
# byte: even = CSV, odd = JSON lines); new inputs go to the build tree, never the sources.
if(KF_FUZZ AND TARGET kf_producers)
    add_executable(fuzz_feed ${CMAKE_CURRENT_LIST_DIR}/fuzz_feed.c)
    target_link_libraries(fuzz_feed PRIVATE kf_producers kf_warnings)
    target_link_options(fuzz_feed PRIVATE -fsanitize=fuzzer)
    set(_kf_fuzz_feed_work ${CMAKE_CURRENT_BINARY_DIR}/fuzz_feed_corpus)
    file(MAKE_DIRECTORY ${_kf_fuzz_feed_work})
    kf_add_test(NAME fuzz_feed LABELS fuzz TIMEOUT 120
        COMMAND $<TARGET_FILE:fuzz_feed>
        ARGS -max_total_time=20 -rss_limit_mb=2048 -timeout=10 -max_len=4096 -error_exitcode=1
             ${_kf_fuzz_feed_work} ${CMAKE_CURRENT_LIST_DIR}/corpus/feed)
endif()
