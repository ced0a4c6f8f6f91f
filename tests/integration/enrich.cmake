# Integration tests of `kinfer feed` and `kinfer enrich` on the local stack (Kafka and
# PostgreSQL; each exits 77 = SKIP naming the missing KINFER_* variable):
#   eval "$(deploy/local/stack env)" && ctest -L integration -R 'feed|enrich'
# integration_enrich_pg_outage stops PostgreSQL of the SHARED stack for about 3 seconds
# (deploy/local/stack stop/start postgres); it is skipped when the script is missing.
if(TARGET kf_producers AND TARGET kf_consumers AND TARGET kinfer)
    kf_add_test(NAME integration_feed
        SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_feed_it.c
                ${CMAKE_CURRENT_LIST_DIR}/test_enrich_common.c
        LIBS kf_producers LABELS integration TIMEOUT 180
        ARGS $<TARGET_FILE:kinfer>)
    add_dependencies(integration_feed kinfer)
    foreach(mode flow pg_outage)
        kf_add_test(NAME integration_enrich_${mode}
            SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_enrich_it.c
                    ${CMAKE_CURRENT_LIST_DIR}/test_enrich_common.c
            LIBS kf_consumers kf_producers LABELS integration TIMEOUT 300
            ARGS ${mode} ${CMAKE_SOURCE_DIR}/sql/migrate.sh ${CMAKE_SOURCE_DIR}/deploy/local/stack)
    endforeach()
    # The two enrich tests share nothing but the stack; the outage one must not overlap the
    # flow one's PostgreSQL use, so ctest -j runs them one after the other.
    set_tests_properties(integration_enrich_flow integration_enrich_pg_outage PROPERTIES
        RESOURCE_LOCK kf_enrich_pg)
endif()
