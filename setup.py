from setuptools import find_packages, setup

package_name = "bitrl_ros"

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(include=["bitrl_ros", "bitrl_ros.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
        ("share/" + package_name + "/config", ["config/agent.yaml", "config/train.yaml"]),
    ],
    install_requires=["setuptools"],
    zip_safe=False,
    maintainer="bitrl_ros developers",
    maintainer_email="bitrl-ros@example.org",
    description="Reinforcement learning on a frozen 1.58-bit (ternary) language-model backbone for ROS 2 robots.",
    license="Apache-2.0",
    python_requires=">=3.10",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [
            "bitrl = bitrl_ros.cli:main",
        ],
    },
)
