# Unit tests of the dispatcher and the auditor (consumers/): webhook signing and verification
# against fixed vectors, the SSRF guard's address classes, retry policy, configuration, the
# audit index template and document mapping, the Kibana saved objects. No service needed.
if(TARGET kf_consumers)
    kf_add_test(NAME unit_webhook SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_webhook.c
        LIBS kf_consumers)
    kf_add_test(NAME unit_dispatch SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_dispatch.c
        LIBS kf_consumers)
    kf_add_test(NAME unit_auditor SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_auditor.c
        LIBS kf_consumers)
    target_compile_definitions(unit_auditor PRIVATE KF_SOURCE_DIR="${CMAKE_SOURCE_DIR}")
endif()
