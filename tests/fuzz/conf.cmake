# libFuzzer targets for the config file parser (fuzz_conf) and the strict JSON parser
# (fuzz_json), built only with -DKF_FUZZ=ON (clang). Each ctest run is bounded (20 s) over its
# seed corpus in corpus/conf/ and corpus/json/; new inputs go to a scratch folder in the build
# tree, never into the sources.
if(KF_FUZZ)
    foreach(_kf_fz conf json)
        add_executable(fuzz_${_kf_fz} ${CMAKE_CURRENT_LIST_DIR}/fuzz_${_kf_fz}.c)
        target_link_libraries(fuzz_${_kf_fz} PRIVATE kf_core kf_warnings)
        target_link_options(fuzz_${_kf_fz} PRIVATE -fsanitize=fuzzer)
        set(_kf_fz_work ${CMAKE_CURRENT_BINARY_DIR}/fuzz_${_kf_fz}_corpus)
        file(MAKE_DIRECTORY ${_kf_fz_work})
        kf_add_test(NAME fuzz_${_kf_fz} LABELS fuzz TIMEOUT 120
            COMMAND $<TARGET_FILE:fuzz_${_kf_fz}>
            ARGS -max_total_time=20 -rss_limit_mb=2048 -timeout=10 -max_len=4096 -error_exitcode=1
                 ${_kf_fz_work} ${CMAKE_CURRENT_LIST_DIR}/corpus/${_kf_fz})
    endforeach()
endif()
