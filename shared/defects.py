"""The default defect catalogue (P-F.3: the defect code Quality gives a complaint), with its
names in Chinese and English: where quality's catalogue and reporting's names start.

Each service keeps its own settings (no service asks another at run time); this is only where
they start, so that one list is written once.
"""

# code -> (zh-Hans, en), in the order a form lists them.
DEFAULT_DEFECT_LABELS: dict[str, tuple[str, str]] = {
    "D01": ("尺寸", "Dimensional"),
    "D02": ("表面/外观", "Surface / cosmetic"),
    "D03": ("功能失效", "Functional failure"),
    "D04": ("材料", "Material"),
    "D05": ("包装/标识", "Packaging / labelling"),
    "D06": ("污染/异物", "Contamination / foreign matter"),
    "D07": ("装配", "Assembly"),
    "D08": ("文件/证书", "Documents / certificates"),
    "D09": ("错件/数量", "Wrong part / quantity"),
    "D99": ("其他", "Other"),
}
