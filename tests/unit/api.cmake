# Unit tests of the HTTP API's pure parts (producers/api_*.c): request validation of every
# field, the token bucket, routing, error bodies and the OpenAPI document against the route
# table. No services needed.
if(TARGET kf_producers)
    kf_add_test(NAME unit_api_validate
        SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_api_validate.c
        LIBS kf_producers kf_core LABELS unit)
    kf_add_test(NAME unit_api_misc
        SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_api_misc.c
        LIBS kf_producers kf_core LABELS unit)
    target_compile_definitions(unit_api_misc PRIVATE
        KF_OPENAPI_JSON="${CMAKE_SOURCE_DIR}/docs/openapi.json")
endif()
