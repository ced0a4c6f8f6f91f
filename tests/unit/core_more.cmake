# Unit tests of core/ modules conf, json, metrics (+ buf) and http. No service needed: the HTTP
# test starts its own libmicrohttpd server on 127.0.0.1 with an ephemeral port.
#
# This file doubles as a CMake script: `cmake --build <dir> --target conf-docs` runs it with -P
# to rewrite the generated tables of docs/configuration.md from the registered config tables.
if(CMAKE_SCRIPT_MODE_FILE)
    # -P mode: KF_DOCGEN (the unit_conf binary) and KF_DOCS (the markdown file) are given.
    execute_process(COMMAND ${KF_DOCGEN} --write-docs OUTPUT_VARIABLE _gen RESULT_VARIABLE _rc)
    if(NOT _rc EQUAL 0)
        message(FATAL_ERROR "conf-docs: ${KF_DOCGEN} failed (${_rc})")
    endif()
    file(READ ${KF_DOCS} _md)
    set(_begin "<!-- BEGIN GENERATED: kinfer conf tables -->\n")
    set(_end "<!-- END GENERATED -->")
    string(FIND "${_md}" "${_begin}" _b)
    string(FIND "${_md}" "${_end}" _e)
    if(_b EQUAL -1 OR _e EQUAL -1)
        message(FATAL_ERROR "conf-docs: markers not found in ${KF_DOCS}")
    endif()
    string(LENGTH "${_begin}" _blen)
    math(EXPR _head_len "${_b} + ${_blen}")
    string(SUBSTRING "${_md}" 0 ${_head_len} _head)
    string(SUBSTRING "${_md}" ${_e} -1 _tail)
    file(WRITE ${KF_DOCS} "${_head}${_gen}${_tail}")
    return()
endif()

kf_add_test(NAME unit_conf SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_conf.c LIBS kf_core
    ENV KF_DOCS_FILE=${CMAKE_SOURCE_DIR}/docs/configuration.md)
kf_add_test(NAME unit_json SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_json.c LIBS kf_core)
kf_add_test(NAME unit_metrics SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_metrics.c LIBS kf_core)
kf_add_test(NAME unit_http SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_http.c
    LIBS kf_core PkgConfig::MHD TIMEOUT 60)

add_custom_target(conf-docs
    COMMAND ${CMAKE_COMMAND} -DKF_DOCGEN=$<TARGET_FILE:unit_conf>
            -DKF_DOCS=${CMAKE_SOURCE_DIR}/docs/configuration.md -P ${CMAKE_CURRENT_LIST_FILE}
    DEPENDS unit_conf
    COMMENT "Regenerating the key tables of docs/configuration.md")
kf_add_test(NAME unit_conf_clients SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_conf_clients.c
    LIBS kf_core)
