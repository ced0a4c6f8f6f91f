# The committed demonstration model (models/kinfer-demo-risk.gguf, trained by tools/demo-model/):
# kinfer's tokenization and greedy continuation of the golden prompts must equal PyTorch's, id
# for id (tests/fixtures/demo_model/greedy.json).
#   unit_demo_model_golden   C only: the engine vs the stored PyTorch ids.
#   unit_demo_model_pytorch  the same through tests/reference/demo_model_check.py, which also
#                            recomputes PyTorch live from the GGUF when /usr/bin/python3 can
#                            import torch (prints "mode: live" or "mode: golden-only").
if(TARGET kf_engine)
    set(_dm_model ${CMAKE_SOURCE_DIR}/models/kinfer-demo-risk.gguf)
    set(_dm_golden ${CMAKE_SOURCE_DIR}/tests/fixtures/demo_model/greedy.json)
    kf_add_test(NAME unit_demo_model_golden
        SOURCES ${CMAKE_CURRENT_LIST_DIR}/demo_model_driver.c
        LIBS kf_engine
        ARGS --model ${_dm_model} --golden ${_dm_golden} --threads 2
        TIMEOUT 120)
    set(_dm_py /usr/bin/python3)
    if(NOT EXISTS ${_dm_py})
        find_package(Python3 COMPONENTS Interpreter QUIET)
        set(_dm_py ${Python3_EXECUTABLE})
    endif()
    if(_dm_py)
        kf_add_test(NAME unit_demo_model_pytorch
            COMMAND ${_dm_py} ${CMAKE_SOURCE_DIR}/tests/reference/demo_model_check.py
            ARGS --driver $<TARGET_FILE:unit_demo_model_golden> --model ${_dm_model}
                --golden ${_dm_golden} --threads 2
            TIMEOUT 300)
    endif()
endif()
