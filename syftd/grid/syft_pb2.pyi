from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Id(_message.Message):
    __slots__ = ("id_int", "id_str")
    ID_INT_FIELD_NUMBER: _ClassVar[int]
    ID_STR_FIELD_NUMBER: _ClassVar[int]
    id_int: int
    id_str: str
    def __init__(self, id_int: _Optional[int] = ..., id_str: _Optional[str] = ...) -> None: ...

class Shape(_message.Message):
    __slots__ = ("dims",)
    DIMS_FIELD_NUMBER: _ClassVar[int]
    dims: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, dims: _Optional[_Iterable[int]] = ...) -> None: ...

class Size(_message.Message):
    __slots__ = ("dims",)
    DIMS_FIELD_NUMBER: _ClassVar[int]
    dims: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, dims: _Optional[_Iterable[int]] = ...) -> None: ...

class TensorData(_message.Message):
    __slots__ = ("shape", "dtype", "is_quantized", "scale", "zero_point", "contents_uint8", "contents_int8", "contents_int16", "contents_int32", "contents_int64", "contents_float16", "contents_float32", "contents_float64", "contents_bool", "contents_qint8", "contents_quint8", "contents_qint32", "contents_bfloat16")
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    IS_QUANTIZED_FIELD_NUMBER: _ClassVar[int]
    SCALE_FIELD_NUMBER: _ClassVar[int]
    ZERO_POINT_FIELD_NUMBER: _ClassVar[int]
    CONTENTS_UINT8_FIELD_NUMBER: _ClassVar[int]
    CONTENTS_INT8_FIELD_NUMBER: _ClassVar[int]
    CONTENTS_INT16_FIELD_NUMBER: _ClassVar[int]
    CONTENTS_INT32_FIELD_NUMBER: _ClassVar[int]
    CONTENTS_INT64_FIELD_NUMBER: _ClassVar[int]
    CONTENTS_FLOAT16_FIELD_NUMBER: _ClassVar[int]
    CONTENTS_FLOAT32_FIELD_NUMBER: _ClassVar[int]
    CONTENTS_FLOAT64_FIELD_NUMBER: _ClassVar[int]
    CONTENTS_BOOL_FIELD_NUMBER: _ClassVar[int]
    CONTENTS_QINT8_FIELD_NUMBER: _ClassVar[int]
    CONTENTS_QUINT8_FIELD_NUMBER: _ClassVar[int]
    CONTENTS_QINT32_FIELD_NUMBER: _ClassVar[int]
    CONTENTS_BFLOAT16_FIELD_NUMBER: _ClassVar[int]
    shape: Size
    dtype: str
    is_quantized: bool
    scale: float
    zero_point: int
    contents_uint8: _containers.RepeatedScalarFieldContainer[int]
    contents_int8: _containers.RepeatedScalarFieldContainer[int]
    contents_int16: _containers.RepeatedScalarFieldContainer[int]
    contents_int32: _containers.RepeatedScalarFieldContainer[int]
    contents_int64: _containers.RepeatedScalarFieldContainer[int]
    contents_float16: bytes
    contents_float32: bytes
    contents_float64: bytes
    contents_bool: _containers.RepeatedScalarFieldContainer[bool]
    contents_qint8: _containers.RepeatedScalarFieldContainer[int]
    contents_quint8: _containers.RepeatedScalarFieldContainer[int]
    contents_qint32: _containers.RepeatedScalarFieldContainer[int]
    contents_bfloat16: bytes
    def __init__(self, shape: _Optional[_Union[Size, _Mapping]] = ..., dtype: _Optional[str] = ..., is_quantized: _Optional[bool] = ..., scale: _Optional[float] = ..., zero_point: _Optional[int] = ..., contents_uint8: _Optional[_Iterable[int]] = ..., contents_int8: _Optional[_Iterable[int]] = ..., contents_int16: _Optional[_Iterable[int]] = ..., contents_int32: _Optional[_Iterable[int]] = ..., contents_int64: _Optional[_Iterable[int]] = ..., contents_float16: _Optional[bytes] = ..., contents_float32: _Optional[bytes] = ..., contents_float64: _Optional[bytes] = ..., contents_bool: _Optional[_Iterable[bool]] = ..., contents_qint8: _Optional[_Iterable[int]] = ..., contents_quint8: _Optional[_Iterable[int]] = ..., contents_qint32: _Optional[_Iterable[int]] = ..., contents_bfloat16: _Optional[bytes] = ...) -> None: ...

class TorchTensor(_message.Message):
    __slots__ = ("id", "contents_data", "contents_bin", "chain", "grad_chain", "tags", "description", "serializer")
    class Serializer(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        SERIALIZER_UNSPECIFIED: _ClassVar[TorchTensor.Serializer]
        SERIALIZER_TORCH: _ClassVar[TorchTensor.Serializer]
        SERIALIZER_NUMPY: _ClassVar[TorchTensor.Serializer]
        SERIALIZER_TF: _ClassVar[TorchTensor.Serializer]
        SERIALIZER_ALL: _ClassVar[TorchTensor.Serializer]
    SERIALIZER_UNSPECIFIED: TorchTensor.Serializer
    SERIALIZER_TORCH: TorchTensor.Serializer
    SERIALIZER_NUMPY: TorchTensor.Serializer
    SERIALIZER_TF: TorchTensor.Serializer
    SERIALIZER_ALL: TorchTensor.Serializer
    ID_FIELD_NUMBER: _ClassVar[int]
    CONTENTS_DATA_FIELD_NUMBER: _ClassVar[int]
    CONTENTS_BIN_FIELD_NUMBER: _ClassVar[int]
    CHAIN_FIELD_NUMBER: _ClassVar[int]
    GRAD_CHAIN_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    SERIALIZER_FIELD_NUMBER: _ClassVar[int]
    id: Id
    contents_data: TensorData
    contents_bin: bytes
    chain: TorchTensor
    grad_chain: TorchTensor
    tags: _containers.RepeatedScalarFieldContainer[str]
    description: str
    serializer: TorchTensor.Serializer
    def __init__(self, id: _Optional[_Union[Id, _Mapping]] = ..., contents_data: _Optional[_Union[TensorData, _Mapping]] = ..., contents_bin: _Optional[bytes] = ..., chain: _Optional[_Union[TorchTensor, _Mapping]] = ..., grad_chain: _Optional[_Union[TorchTensor, _Mapping]] = ..., tags: _Optional[_Iterable[str]] = ..., description: _Optional[str] = ..., serializer: _Optional[_Union[TorchTensor.Serializer, str]] = ...) -> None: ...

class Parameter(_message.Message):
    __slots__ = ("id", "tensor", "requires_grad", "grad")
    ID_FIELD_NUMBER: _ClassVar[int]
    TENSOR_FIELD_NUMBER: _ClassVar[int]
    REQUIRES_GRAD_FIELD_NUMBER: _ClassVar[int]
    GRAD_FIELD_NUMBER: _ClassVar[int]
    id: Id
    tensor: TorchTensor
    requires_grad: bool
    grad: TorchTensor
    def __init__(self, id: _Optional[_Union[Id, _Mapping]] = ..., tensor: _Optional[_Union[TorchTensor, _Mapping]] = ..., requires_grad: _Optional[bool] = ..., grad: _Optional[_Union[TorchTensor, _Mapping]] = ...) -> None: ...

class Placeholder(_message.Message):
    __slots__ = ("child_tensor", "child_parameter", "id", "tags", "description", "expected_shape")
    CHILD_TENSOR_FIELD_NUMBER: _ClassVar[int]
    CHILD_PARAMETER_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_SHAPE_FIELD_NUMBER: _ClassVar[int]
    child_tensor: TorchTensor
    child_parameter: Parameter
    id: Id
    tags: _containers.RepeatedScalarFieldContainer[str]
    description: str
    expected_shape: Shape
    def __init__(self, child_tensor: _Optional[_Union[TorchTensor, _Mapping]] = ..., child_parameter: _Optional[_Union[Parameter, _Mapping]] = ..., id: _Optional[_Union[Id, _Mapping]] = ..., tags: _Optional[_Iterable[str]] = ..., description: _Optional[str] = ..., expected_shape: _Optional[_Union[Shape, _Mapping]] = ...) -> None: ...

class StateTensor(_message.Message):
    __slots__ = ("torch_tensor", "torch_param")
    TORCH_TENSOR_FIELD_NUMBER: _ClassVar[int]
    TORCH_PARAM_FIELD_NUMBER: _ClassVar[int]
    torch_tensor: TorchTensor
    torch_param: Parameter
    def __init__(self, torch_tensor: _Optional[_Union[TorchTensor, _Mapping]] = ..., torch_param: _Optional[_Union[Parameter, _Mapping]] = ...) -> None: ...

class State(_message.Message):
    __slots__ = ("placeholders", "tensors")
    PLACEHOLDERS_FIELD_NUMBER: _ClassVar[int]
    TENSORS_FIELD_NUMBER: _ClassVar[int]
    placeholders: _containers.RepeatedCompositeFieldContainer[Placeholder]
    tensors: _containers.RepeatedCompositeFieldContainer[StateTensor]
    def __init__(self, placeholders: _Optional[_Iterable[_Union[Placeholder, _Mapping]]] = ..., tensors: _Optional[_Iterable[_Union[StateTensor, _Mapping]]] = ...) -> None: ...

class Plan(_message.Message):
    __slots__ = ("id", "role", "include_state", "name", "tags", "description", "torchscript", "input_types", "base_framework", "roles")
    ID_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_STATE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    TORCHSCRIPT_FIELD_NUMBER: _ClassVar[int]
    INPUT_TYPES_FIELD_NUMBER: _ClassVar[int]
    BASE_FRAMEWORK_FIELD_NUMBER: _ClassVar[int]
    ROLES_FIELD_NUMBER: _ClassVar[int]
    id: Id
    role: bytes
    include_state: bool
    name: str
    tags: _containers.RepeatedScalarFieldContainer[str]
    description: str
    torchscript: bytes
    input_types: bytes
    base_framework: str
    roles: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, id: _Optional[_Union[Id, _Mapping]] = ..., role: _Optional[bytes] = ..., include_state: _Optional[bool] = ..., name: _Optional[str] = ..., tags: _Optional[_Iterable[str]] = ..., description: _Optional[str] = ..., torchscript: _Optional[bytes] = ..., input_types: _Optional[bytes] = ..., base_framework: _Optional[str] = ..., roles: _Optional[_Iterable[bytes]] = ...) -> None: ...
