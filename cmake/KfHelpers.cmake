# Helpers shared by every folder's CMakeLists.txt.

# kf_add_test(NAME name SOURCES a.c ... [LIBS ...] [LABELS unit|integration|e2e|gpu|fuzz]
#             [TIMEOUT s] [ARGS ...] [COMMAND ...] [ENV K=V ...])
# Builds an executable from SOURCES (unless COMMAND is given) and registers it with ctest.
# Exit code 77 means SKIP, so a test that cannot run here never reports PASS.
function(kf_add_test)
    cmake_parse_arguments(T "" "NAME;TIMEOUT" "SOURCES;LIBS;LABELS;ARGS;COMMAND;ENV" ${ARGN})
    if(NOT T_TIMEOUT)
        set(T_TIMEOUT 60)
    endif()
    if(NOT T_LABELS)
        set(T_LABELS unit)
    endif()
    if(T_COMMAND)
        add_test(NAME ${T_NAME} COMMAND ${T_COMMAND} ${T_ARGS})
    else()
        add_executable(${T_NAME} ${T_SOURCES})
        target_link_libraries(${T_NAME} PRIVATE ${T_LIBS} kf_warnings)
        if("unit" IN_LIST T_LABELS AND TARGET PkgConfig::CMOCKA)
            target_link_libraries(${T_NAME} PRIVATE PkgConfig::CMOCKA)
        endif()
        add_test(NAME ${T_NAME} COMMAND ${T_NAME} ${T_ARGS})
    endif()
    set_tests_properties(${T_NAME} PROPERTIES TIMEOUT ${T_TIMEOUT} LABELS "${T_LABELS}"
        SKIP_RETURN_CODE 77)
    if(T_ENV)
        set_tests_properties(${T_NAME} PROPERTIES ENVIRONMENT "${T_ENV}")
    endif()
endfunction()
