# Integration tests of core/kf_kafka.h against the local stack's real broker
# (KINFER_KAFKA_BROKERS; each test exits 77 = SKIP when it is unset).
add_executable(kafka_it_helper ${CMAKE_CURRENT_LIST_DIR}/kafka_it_helper.c)
target_link_libraries(kafka_it_helper PRIVATE kf_core kf_warnings)
foreach(mode resume txn_kill txn_abort dlq)
    if(mode STREQUAL "resume")
        kf_add_test(NAME integration_kafka_${mode} SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_kafka_it.c
            LIBS kf_core LABELS integration TIMEOUT 90
            ARGS ${mode} $<TARGET_FILE:kafka_it_helper>)
    else()
        kf_add_test(NAME integration_kafka_${mode} COMMAND integration_kafka_resume
            LABELS integration TIMEOUT 90 ARGS ${mode} $<TARGET_FILE:kafka_it_helper>)
    endif()
endforeach()
add_dependencies(integration_kafka_resume kafka_it_helper)

# Newlines, not semicolons, separate the shell statements (CMake splits lists on ';').
kf_add_test(NAME integration_kafka_smoke LABELS integration TIMEOUT 90
    COMMAND sh -c "if [ -z \"$KINFER_KAFKA_BROKERS\" ]
then echo 'SKIP: KINFER_KAFKA_BROKERS is not set'
exit 77
fi
exec \"$0\" smoke -n 20"
    $<TARGET_FILE:kinfer>)
