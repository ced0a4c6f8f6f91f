# Integration test of `kinfer report` (risk/report_run.c, risk/cmd_report.c) on the local
# stack: enricher and dispatcher in-process, a `kinfer infer` worker on a tiny generated
# model, two batches compared byte for byte, `report get` of a stored result. Exits 77 (SKIP)
# without KINFER_KAFKA_BROKERS / KINFER_PG_DSN or the tokenizer vocabulary:
#   eval "$(deploy/local/stack env)" && ctest -R integration_report --output-on-failure
if(TARGET kf_risk AND TARGET kf_consumers AND TARGET kinfer)
    kf_add_test(NAME integration_report
        SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_report_it.c
        LIBS kf_risk kf_consumers LABELS integration TIMEOUT 600
        ARGS $<TARGET_FILE:kinfer> ${CMAKE_SOURCE_DIR}/sql/migrate.sh
             ${CMAKE_SOURCE_DIR}/../shared/testdata/tokenizer/ggml-vocab-qwen2.gguf)
    add_dependencies(integration_report kinfer)
endif()
