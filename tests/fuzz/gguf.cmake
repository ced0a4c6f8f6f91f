# libFuzzer target for the GGUF reader (inference/gguf.c), built only with -DKF_FUZZ=ON (clang).
# The ctest run is bounded (20 s) over the seed corpus in corpus/gguf/ (a valid file with every
# kv and tensor type plus one corrupt variant per crash class, from `test_gguf --dump`); new
# inputs go to a scratch folder in the build tree, never into the sources. libFuzzer's default
# error exit code is 77, which ctest would report as SKIP, so a finding must exit 1.
if(KF_FUZZ AND TARGET kf_engine)
    add_executable(fuzz_gguf ${CMAKE_CURRENT_LIST_DIR}/fuzz_gguf.c)
    target_link_libraries(fuzz_gguf PRIVATE kf_engine kf_warnings)
    target_link_options(fuzz_gguf PRIVATE -fsanitize=fuzzer)
    set(_kf_fuzz_gguf_work ${CMAKE_CURRENT_BINARY_DIR}/fuzz_gguf_corpus)
    file(MAKE_DIRECTORY ${_kf_fuzz_gguf_work})
    kf_add_test(NAME fuzz_gguf LABELS fuzz TIMEOUT 120
        COMMAND $<TARGET_FILE:fuzz_gguf>
        ARGS -max_total_time=20 -rss_limit_mb=2048 -timeout=10 -max_len=8192 -error_exitcode=1
             -artifact_prefix=${CMAKE_CURRENT_BINARY_DIR}/fuzz_gguf_
             ${_kf_fuzz_gguf_work} ${CMAKE_CURRENT_LIST_DIR}/corpus/gguf)
endif()
