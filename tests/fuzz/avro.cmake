# libFuzzer target for the Avro decoder (core/avro*.c), built only with -DKF_FUZZ=ON (clang).
# The ctest run is bounded (20 s) over the seed corpus in corpus/avro/ (one valid record per
# schema); new inputs go to a scratch folder in the build tree, never into the sources.
if(KF_FUZZ)
    add_executable(fuzz_avro ${CMAKE_CURRENT_LIST_DIR}/fuzz_avro.c)
    target_link_libraries(fuzz_avro PRIVATE kf_core kf_warnings)
    target_link_options(fuzz_avro PRIVATE -fsanitize=fuzzer)
    set(_kf_fuzz_avro_work ${CMAKE_CURRENT_BINARY_DIR}/fuzz_avro_corpus)
    file(MAKE_DIRECTORY ${_kf_fuzz_avro_work})
    kf_add_test(NAME fuzz_avro LABELS fuzz TIMEOUT 120
        COMMAND $<TARGET_FILE:fuzz_avro>
        ARGS -max_total_time=20 -rss_limit_mb=2048 -timeout=10 -max_len=4096 -error_exitcode=1
             ${_kf_fuzz_avro_work} ${CMAKE_CURRENT_LIST_DIR}/corpus/avro)
endif()
