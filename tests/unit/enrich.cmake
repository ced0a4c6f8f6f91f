# Unit tests of the market feed parser (producers/) and the enricher's rendering and market
# state (consumers/). No services needed.
if(TARGET kf_producers)
    kf_add_test(NAME unit_feed SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_feed.c LIBS kf_producers)
endif()
if(TARGET kf_consumers)
    kf_add_test(NAME unit_enrich SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_enrich.c LIBS kf_consumers)
    kf_add_test(NAME unit_market SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_market.c LIBS kf_consumers)
endif()
