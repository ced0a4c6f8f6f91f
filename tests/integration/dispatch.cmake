# Integration tests of `kinfer dispatch` and `kinfer audit` against the local stack
# (eval "$(deploy/local/stack env)"). Each scenario uses its own topics, consumer groups,
# scratch database (sql/migrate.sh) or index prefix, and exits 77 (SKIP) naming the missing
# KINFER_KAFKA_BROKERS / KINFER_PG_DSN / KINFER_SEARCH_URL.
if(TARGET kf_consumers)
    kf_add_test(NAME integration_dispatch_basic
        SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_dispatch_it.c
        LIBS kf_consumers LABELS integration TIMEOUT 240 ARGS basic)
    target_compile_definitions(integration_dispatch_basic PRIVATE
        KF_SOURCE_DIR="${CMAKE_SOURCE_DIR}")
    foreach(scen retry guard restart)
        kf_add_test(NAME integration_dispatch_${scen} COMMAND integration_dispatch_basic
            LABELS integration TIMEOUT 240 ARGS ${scen})
    endforeach()
    kf_add_test(NAME integration_audit
        SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_audit_it.c
        LIBS kf_consumers LABELS integration TIMEOUT 240)
endif()
if(TARGET integration_audit)
    kf_add_test(NAME integration_audit_partial COMMAND integration_audit
        LABELS integration TIMEOUT 120 ARGS partial)
endif()
