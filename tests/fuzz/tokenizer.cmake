# libFuzzer target for the tokenizer (inference/tokenizer*.c): arbitrary bytes through
# encode and decode on tiny vocabularies of every pre-tokenizer type and, when present, the
# real vocabularies in shared/testdata. Built only with -DKF_FUZZ=ON (clang); the ctest run is
# bounded (20 s) over the seeds in corpus/tokenizer/, new inputs go to the build tree.
# -error_exitcode=1: libFuzzer's default failure code is 77, which ctest would read as SKIP.
if(KF_FUZZ AND TARGET kf_engine)
    add_executable(fuzz_tokenizer ${CMAKE_CURRENT_LIST_DIR}/fuzz_tokenizer.c)
    target_link_libraries(fuzz_tokenizer PRIVATE kf_engine kf_warnings)
    target_link_options(fuzz_tokenizer PRIVATE -fsanitize=fuzzer)
    target_compile_definitions(fuzz_tokenizer PRIVATE
        KF_TOKENIZER_TESTDATA="${CMAKE_SOURCE_DIR}/../shared/testdata/tokenizer")
    set(_kf_fuzz_tok_work ${CMAKE_CURRENT_BINARY_DIR}/fuzz_tokenizer_corpus)
    file(MAKE_DIRECTORY ${_kf_fuzz_tok_work})
    kf_add_test(NAME fuzz_tokenizer LABELS fuzz TIMEOUT 180
        COMMAND $<TARGET_FILE:fuzz_tokenizer>
        ARGS -max_total_time=20 -rss_limit_mb=4096 -timeout=10 -max_len=4096
             -error_exitcode=1 -artifact_prefix=${_kf_fuzz_tok_work}/
             ${_kf_fuzz_tok_work} ${CMAKE_CURRENT_LIST_DIR}/corpus/tokenizer)
endif()
