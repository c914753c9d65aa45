"""The fixed text every exported variant is verified on: real sentences of mixed length, half Chinese.

Fixed (not sampled) so that figures in manifests are comparable across exports and versions. Half of the 64 are
Chinese (short, medium and long alike), so that a Chinese model's verification is not decided by English text, nor
an English model's by Chinese.
"""

from __future__ import annotations

__all__ = ["VERIFICATION_SENTENCES"]

_SHORT = [
    "Hello!",
    "Thank you very much.",
    "Where is the train station?",
    "The cat sat on the mat.",
    "A man is playing a guitar.",
    "A woman is slicing an onion.",
    "The stock market fell sharply on Monday.",
    "Please restart the server before noon.",
    "Water boils at one hundred degrees Celsius at sea level.",
    "How do I reset my password?",
    "Café au lait, naïve résumé, and jalapeño are borrowed words.",
    "The quick brown fox jumps over the lazy dog.",
    "Ein Mann fährt mit dem Fahrrad durch die Stadt.",
    "Le chat dort sur le canapé depuis ce matin.",
    "Error 404: the requested page could not be found.",
    "Add 2 cups of flour, 1 tsp of salt and 250 ml of milk.",
]

_CHINESE = [
    "今天天气真好啊",
    "我喜欢在周末去公园散步。",
    "这家餐厅的菜非常好吃，价格也很合理。",
    "北京是中国的首都。",
    "请问最近的地铁站在哪里？",
    "他每天早上六点起床跑步。",
    "机器学习正在改变许多行业的工作方式。",
    "我们明天下午三点在会议室开会。",
    "好的。",
    "谢谢你的帮助！",
    "这部电影太无聊了，看了一半就走了。",
    "快递什么时候能到？",
    "他昨天买了一台新电脑。",
    "服务员态度很差，以后不会再来了。",
    "请把窗户关上，外面下雨了。",
    "错误代码404：找不到请求的页面。",
]

_MEDIUM = [
    "A young child is riding a horse along the beach while the sun sets behind the hills.",
    "The committee approved the new budget after a long debate about funding for public schools.",
    "Researchers found that regular exercise improves both memory and mood in older adults.",
    "The software update fixes a security vulnerability that allowed attackers to read private files.",
    "After the storm, volunteers spent the weekend clearing fallen trees from the village roads.",
    "The museum's new exhibition brings together paintings that have not been shown in public for a century.",
    "The novel follows a family of farmers through three generations of drought, war and migration.",
    "Customers complained that the new app logs them out every time they switch to another program.",
    "Scientists detected water vapour in the atmosphere of a planet orbiting a distant star.",
    "Batch inference sorts inputs by length so that padding wastes as little computation as possible.",
    "ONNX Runtime fuses attention, layer normalization and GELU into single kernels for faster inference.",
    "近年来，越来越多的年轻人选择在大城市工作，但房价的上涨也给他们带来了很大的压力。",
    "这本书讲述了一个普通家庭在时代变迁中的故事，情节感人，语言朴实。",
    "由于大雾天气，我们的航班推迟了三个小时，到达目的地时已经是深夜了。",
    "市政府决定把废弃的铁路改造成一条供市民骑车和散步的绿道。",
    "研究人员发现，坚持锻炼不仅能改善记忆力，还能让老年人的心情更好。",
    "这次软件更新修复了一个安全漏洞，攻击者曾经可以利用它读取用户的私人文件。",
    "暴风雨过后，志愿者们花了整个周末清理倒在村路上的大树。",
    "守门员在比赛最后一分钟做出了精彩的扑救，帮助球队保住了平局。",
    "公司表示，由于云服务需求旺盛，本季度利润大幅增长。",
    "她从小学习弹钢琴，现在在一所小学教音乐。",
    "这款手机的电池续航能力很强，充一次电可以用两天，拍照效果也不错。",
    "博物馆的新展览汇集了一百年来从未公开展出过的画作。",
    "Transformer encoders such as BERT read the whole sentence at once rather than one word at a time.",
]

_LONG = [
    (
        "The history of the printing press is often told as the story of a single inventor, but the technology "
        "depended on many earlier developments: paper making, which reached Europe from China through the "
        "Islamic world; oil-based inks that adhered to metal type; and the screw presses already used to make "
        "wine and olive oil. What changed in the fifteenth century was the combination of these elements with "
        "movable type cast in a hand mould, which made it possible to produce large numbers of identical letters "
        "quickly and cheaply."
    ),
    (
        "When you deploy a language model on a machine without a GPU, the cost of each request is dominated by "
        "the matrix multiplications in the attention and feed-forward layers. Reducing the precision of the "
        "weights to eight-bit integers lets the processor use vector instructions that perform four times as "
        "many operations per cycle, but it also introduces small errors that accumulate from layer to layer. "
        "Whether those errors matter depends on the task: a search engine that ranks documents by similarity "
        "may be very sensitive to them, while a classifier with a wide margin may not notice them at all."
    ),
    (
        "随着人工智能技术的快速发展，自然语言处理已经在搜索引擎、智能客服、机器翻译等领域得到了广泛应用。"
        "然而，大型模型在推理时需要大量的计算资源，如何在普通的服务器上高效地运行这些模型，"
        "成为了许多企业关心的问题。通过模型量化、算子融合和批处理优化，可以在几乎不损失精度的情况下显著提高推理速度。"
    ),
    (
        "The river rises in the mountains to the north, where snowmelt feeds a dozen small streams that join in a "
        "narrow valley. From there it flows south through forests of pine and birch, past villages whose mills "
        "once ground grain for the whole province, and into the broad plain where most of the country's wheat is "
        "now grown. In spring the water runs high and brown with silt; by late summer it is clear and slow, and "
        "children swim in the pools below the old stone bridges. Near the coast the river divides into many "
        "channels, and the delta is home to herons, otters and thousands of migrating geese each autumn. "
        "Fishermen there still use flat-bottomed boats of a design that has barely changed in three hundred "
        "years, though most of them now carry a mobile phone and a small outboard motor. The delta's future is "
        "uncertain: dams upstream trap the sediment that once rebuilt its islands, and the sea is rising."
    ),
    (
        "In mathematics, a prime number is a natural number greater than one that is not a product of two "
        "smaller natural numbers. Every natural number greater than one is either prime or can be factored as a "
        "product of primes that is unique up to their order, a result known as the fundamental theorem of "
        "arithmetic. Euclid showed more than two thousand years ago that there are infinitely many primes, and "
        "the distribution of primes among the integers remains one of the deepest subjects of modern research, "
        "connected to the Riemann hypothesis and to the security of the cryptographic systems used on the "
        "internet every day."
    ),
]

_LONG_CHINESE = [
    (
        "长江发源于青藏高原，流经十一个省、自治区和直辖市，最后在上海注入东海，全长约六千三百公里。"
        "它的流域面积占全国陆地面积的五分之一左右，养育了数亿人口。几千年来，沿江的城市依靠航运发展起来，"
        "而三峡等大型水利工程在带来发电和防洪效益的同时，也对生态环境产生了深远的影响。"
    ),
    (
        "尊敬的客户，您好！感谢您就订单问题联系我们的客服团队。对于包裹在运输途中受损，我们深表歉意。"
        "我们已经安排今天以快递方式免费为您补发一件新商品，受损的商品无需退回。"
        "如果五个工作日内仍未收到补发的商品，请回复此邮件并提供订单号，我们会与快递公司一起调查。"
    ),
    (
        "在数学中，质数是指大于一的自然数中，除了一和它本身以外不再有其他因数的数。"
        "每个大于一的自然数要么本身是质数，要么可以唯一地分解为若干质数的乘积，这就是算术基本定理。"
        "早在两千多年前，欧几里得就证明了质数有无穷多个，而质数的分布规律至今仍是数论研究的核心问题之一。"
    ),
]

VERIFICATION_SENTENCES: tuple[str, ...] = tuple(_SHORT + _CHINESE + _MEDIUM + _LONG + _LONG_CHINESE)
