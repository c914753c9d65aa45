"""The fixed text every exported variant is verified on: real sentences of mixed length, some Chinese.

Fixed (not sampled) so that figures in manifests are comparable across exports and versions.
"""

from __future__ import annotations

__all__ = ["VERIFICATION_SENTENCES"]

_SHORT = [
    "Hello!",
    "Yes.",
    "Thank you very much.",
    "Where is the train station?",
    "The cat sat on the mat.",
    "A man is playing a guitar.",
    "A woman is slicing an onion.",
    "Two dogs run across a snowy field.",
    "The stock market fell sharply on Monday.",
    "I forgot my umbrella at the office again.",
    "Please restart the server before noon.",
    "Water boils at one hundred degrees Celsius at sea level.",
    "She bought three apples and a loaf of bread.",
    "The meeting has been moved to Thursday afternoon.",
    "How do I reset my password?",
    "The children laughed at the clown's silly tricks.",
    "Café au lait, naïve résumé, and jalapeño are borrowed words.",
    "The quick brown fox jumps over the lazy dog.",
    "Interest rates were left unchanged by the central bank.",
    "He scored twice in the second half.",
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
]

_MEDIUM = [
    "A young child is riding a horse along the beach while the sun sets behind the hills.",
    "The committee approved the new budget after a long debate about funding for public schools.",
    "Researchers found that regular exercise improves both memory and mood in older adults.",
    "The software update fixes a security vulnerability that allowed attackers to read private files.",
    "After the storm, volunteers spent the weekend clearing fallen trees from the village roads.",
    "The museum's new exhibition brings together paintings that have not been shown in public for a century.",
    "Our flight was delayed by three hours because of heavy fog at the destination airport.",
    "The recipe calls for fresh basil, but dried oregano works almost as well in the sauce.",
    "Engineers are testing whether the bridge can carry heavier trucks without additional supports.",
    "The novel follows a family of farmers through three generations of drought, war and migration.",
    "Customers complained that the new app logs them out every time they switch to another program.",
    "The orchestra opened the season with a symphony that the composer finished only weeks before his death.",
    "Scientists detected water vapour in the atmosphere of a planet orbiting a distant star.",
    "The city council voted to turn the old railway line into a park with cycling and walking paths.",
    "Batch inference sorts inputs by length so that padding wastes as little computation as possible.",
    "ONNX Runtime fuses attention, layer normalization and GELU into single kernels for faster inference.",
    "The goalkeeper made a remarkable save in the final minute to keep the match level.",
    "Farmers in the region are switching to crops that need less water as the summers get hotter.",
    "The company said its quarterly profit rose because of strong demand for its cloud services.",
    "She learned to play the piano as a child and now teaches music at a primary school.",
    "近年来，越来越多的年轻人选择在大城市工作，但房价的上涨也给他们带来了很大的压力。",
    "这本书讲述了一个普通家庭在时代变迁中的故事，情节感人，语言朴实。",
    "Transformer encoders such as BERT read the whole sentence at once rather than one word at a time.",
    "The hikers reached the summit just before noon and stopped to eat lunch above the clouds.",
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
        "Climate scientists use ensembles of simulations to estimate the range of possible futures, because a "
        "single run of a model cannot capture the uncertainty in the initial conditions, the parameters of the "
        "physical processes, or the future emissions of greenhouse gases. Each member of the ensemble starts "
        "from slightly different conditions, and the spread of the results tells researchers how confident they "
        "can be in any particular projection, such as the number of days per year above thirty-five degrees in "
        "a given city by the middle of the century."
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
        "Dear customer, thank you for contacting our support team about the problem with your order. We are sorry "
        "that the package arrived damaged. We have arranged for a replacement to be sent today by express "
        "delivery at no extra cost, and you do not need to return the damaged item. If the replacement has not "
        "arrived within five working days, please reply to this message with your order number and we will "
        "investigate with the courier. We value your custom and hope this resolves the matter to your "
        "satisfaction."
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
    (
        "Step one: unplug the printer and wait thirty seconds. Step two: open the front cover and remove any "
        "paper that is stuck inside, pulling it gently in the direction of the paper path so that it does not "
        "tear. Step three: check that the ink cartridges are seated firmly and that the protective tape has been "
        "removed. Step four: close the cover, plug the printer back in and switch it on. If the warning light "
        "is still flashing after these steps, note the error code shown on the display and contact the service "
        "centre, which can tell you whether a part needs to be replaced under the warranty."
    ),
]

VERIFICATION_SENTENCES: tuple[str, ...] = tuple(_SHORT + _CHINESE + _MEDIUM + _LONG)
