# Tests of the CUDA backend (inference/backends/cuda), label gpu. Built only when the backend is
# (nvcc found). Without a device, cuda_parity and cuda_sampler exit 77 (SKIP); cuda_loader
# checks what needs no GPU and runs everywhere.
if(TARGET kf_cuda)
    set(_kf_cuda_testdata ${CMAKE_SOURCE_DIR}/../shared/testdata/tokenizer)
    foreach(t cuda_parity cuda_sampler cuda_loader)
        kf_add_test(NAME gpu_${t} SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_${t}.c
            LIBS kf_engine kf_cuda m LABELS gpu TIMEOUT 300)
        target_include_directories(gpu_${t} PRIVATE ${CMAKE_SOURCE_DIR}/inference/backends/cuda)
        target_compile_definitions(gpu_${t} PRIVATE
            KF_TESTDATA_TOKENIZER="${_kf_cuda_testdata}")
    endforeach()
endif()
