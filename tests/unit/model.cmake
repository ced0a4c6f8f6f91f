# Unit tests of the model, KV cache and CPU backend (inference/model.c, kv.c, backends/cpu/).
if(TARGET kf_engine)
    foreach(t cpu_kernels cpu_q8x8 cpu_pool model_kv model_forward)
        if(EXISTS ${CMAKE_CURRENT_LIST_DIR}/test_${t}.c)
            kf_add_test(NAME unit_${t} SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_${t}.c
                LIBS kf_engine TIMEOUT 120)
            target_include_directories(unit_${t} PRIVATE
                ${CMAKE_SOURCE_DIR}/inference/backends/cpu ${CMAKE_SOURCE_DIR}/inference)
        endif()
    endforeach()
endif()
