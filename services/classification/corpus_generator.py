"""Deterministic generator of the labelled training corpus (data/corpus.jsonl).

Run `python -m services.classification.corpus_generator` to rewrite the file. Two sources:

- generated reports, composed from templates and slot values, then roughened (prefixes, suffixes,
  typos, emoji, spacing) the way grid workers type on a phone. The templates and slots once kept
  apart for held-out v1 and v2 are all training now (`template` says which pool a report came
  from: `<category>/train/<i>` or `<category>/heldout/<i>`, the retired v2 pool);
- the hand-written reports of data/handwritten.jsonl (one group each, `template` = `hand/<id>`).

Every record is `split: train`. The held-out set is data/heldout_v3.jsonl, written by hand
without these templates and slots and frozen (see evaluate.py); it is never merged here.
Category frequencies follow domain.md (disputes, theft, fraud first).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

CORPUS_PATH = Path(__file__).parent / "data" / "corpus.jsonl"
HANDWRITTEN_PATH = Path(__file__).parent / "data" / "handwritten.jsonl"
SEED = 20261123
TOTAL = 1300
HELDOUT_SHARE = 0.2

# Share of reports per category (neighbour disputes 28.6%, theft 19.2%, fraud 15.8% of police
# matters; consultations lead hotline requests); the rest is spread over the smaller categories.
SHARES = {
    "neighbour_dispute": 0.22, "theft": 0.155, "telecom_fraud": 0.13, "consultation": 0.06,
    "mediation_request": 0.05, "safety_hazard": 0.05, "noise": 0.04, "environment": 0.04,
    "violence": 0.035, "fire": 0.03, "medical_emergency": 0.03, "traffic_accident": 0.03,
    "missing_person": 0.025, "civil_affairs": 0.025, "market_safety": 0.025, "other": 0.025,
}

# Slot values: one pool for training, a disjoint one for the held-out split.
SLOTS = {
    "train": {
        "addr": ["幸福路8号", "建设北路112号", "人民东路3栋", "桂花园小区5栋2单元", "枫林湾12栋", "解放西路与五一大道交叉口",
                 "芙蓉南路菜市场门口", "阳光新城B区", "金色家园7栋301", "劳动路社区活动中心", "东风巷17号", "书院路小学门口",
                 "湘江世纪城3期", "红星村六组", "新河街道办旁边", "麓山名园地下车库", "韶山北路公交站", "曙光苑2栋楼道"],
        "time": ["刚才", "今天上午九点多", "昨晚十一点左右", "十分钟前", "凌晨两点", "下午", "今早", "中午十二点半", "半小时前",
                 "这两天", "昨天傍晚"],
        "who": ["一名男子", "两个年轻人", "一个中年妇女", "几个外地口音的人", "一名穿黑衣服的男子", "一对夫妻"],
        "item": ["电动车", "手机", "钱包", "自行车", "电瓶", "快递"],
        "amount": ["3000", "5万", "12800", "800", "2万6", "49000"],
        "elder": ["80多岁的老人", "一位老太太", "独居的张大爷", "70岁的李奶奶"],
        "child": ["5岁男孩", "一个小女孩", "8岁的孩子", "上小学的儿子"],
        "en_addr": ["No. 8 Xingfu Road", "Building 5, Guihua Garden", "the corner of Jiefang West Rd", "Block 12, Fenglin Bay",
                    "the wet market on Furong South Rd"],
        "en_time": ["just now", "this morning", "last night around 11", "ten minutes ago", "at 2 am"],
    },
    "heldout": {
        "addr": ["和平里4号院", "滨江路88号", "长青苑9栋1单元", "中山路电信营业厅旁", "玉兰小区东门", "星沙大道210号",
                 "朝阳村三组", "科技园C座", "南门口夜市", "梅溪湖一期6栋"],
        "time": ["刚刚", "晚上八点", "一小时前", "今天凌晨", "上周五", "早上七点左右", "前天"],
        "who": ["一个戴帽子的男的", "三名青年", "一位女士", "两名工人"],
        "item": ["笔记本电脑", "摩托车", "金项链", "背包"],
        "amount": ["6500", "18万", "2400", "9万9"],
        "elder": ["90岁的王爷爷", "一位老大爷", "患老年痴呆的母亲"],
        "child": ["3岁的女儿", "一个初中生", "6岁男孩"],
        "en_addr": ["Heping Lane 4", "No. 88 Binjiang Road", "Changqing Court, Building 9", "Yulan Estate east gate"],
        "en_time": ["an hour ago", "this evening", "earlier today"],
    },
}

# (template, urgency) per category and pool; "U" urgent, "G" general. Fraud follows the urgency
# policy of the README: no money moved and the contact ended is general.
TEMPLATES: dict[str, dict[str, list[tuple[str, str]]]] = {
    "neighbour_dispute": {
        "train": [
            ("{addr}楼上邻居家漏水，把楼下天花板泡坏了，两家吵了好几次", "G"),
            ("{addr}两户邻居因为楼道堆放杂物发生争吵，请社区民警来协调一下", "G"),
            ("{time}{addr}邻居之间因停车位吵架，情绪比较激动", "G"),
            ("{addr}对门邻居养狗不拴绳，双方发生口角", "G"),
            ("邻里纠纷：{addr}一楼住户在公共绿地种菜，其他居民有意见", "G"),
            ("{addr}邻居吵架吵得很凶，已经动手推搡，有人受伤流血了", "U"),
            ("{addr}两家邻居为了空调外机滴水的事吵起来了，没有人受伤", "G"),
            ("{time}{addr}隔壁两家因为装修占用公共走廊起了矛盾", "G"),
            ("Neighbours at {en_addr} are arguing again about water leaking from the upstairs flat", "G"),
            ("dispute between neighbours at {en_addr}, shouting in the corridor, nobody hurt", "G"),
            ("{addr} 邻居 dispute 又开始了，为了楼道里的鞋柜", "G"),
            ("{addr}邻里矛盾，楼上住户往楼下扔烟头，多次沟通无果", "G"),
            ("{addr}邻居吵架，其中一人拿着菜刀威胁对方，请马上来", "U"),
            ("楼上楼下因为渗水问题闹纠纷，{addr}，双方都不肯让步", "G"),
            ("{addr}两户人家为了门口摆放花盆的事互相指责，吵了一上午", "G"),
            ("{time}{addr}邻居因为孩子在楼道玩闹起争执，老人被推倒在地受伤了", "U"),
            ("{addr}楼下住户说楼上洗衣机排水渗到他家，双方闹得很僵", "G"),
            ("neighbours quarrel at {en_addr} over a shared parking space", "G"),
        ],
        "heldout": [
            ("{addr}楼上住户深夜拖椅子，楼下老两口上去理论，双方闹得不可开交", "G"),
            ("{time}{addr}两户为了共用的晾衣杆发生口角，互不相让", "G"),
            ("{addr}邻居因为宠物狗咬了对方的猫起冲突，对方扬言要报复", "G"),
            ("{addr}邻居之间打起来了，一方头上出血", "U"),
            ("residents of {en_addr} keep fighting over a shared corridor, no injuries, please mediate", "G"),
        ],
    },
    "theft": {
        "train": [
            ("{addr}居民反映{time}{item}被偷了，停在楼下没锁", "G"),
            ("{time}{addr}发生入室盗窃，家里现金和首饰被盗", "G"),
            ("{addr}有人{item}被扒窃，怀疑是在公交上被偷的", "G"),
            ("{addr}车库里好几辆电动车的电瓶被盗，请派出所来看看监控", "G"),
            ("{who}正在{addr}撬锁偷{item}，人还在现场！", "U"),
            ("{addr}小卖部昨晚失窃，门锁被撬", "G"),
            ("居民{item}丢了，怀疑被人顺走，地点{addr}", "G"),
            ("My {item_en} was stolen outside {en_addr} {en_time}", "G"),
            ("someone broke into a flat at {en_addr}, burglary, the owner is away", "G"),
            ("{addr}工地的钢筋被人偷了不少", "G"),
            ("{addr} 我的{item}被偷了 stolen {en_time}", "G"),
            ("{addr}发现小偷翻墙进小区，还没走，正在偷东西", "U"),
            ("{time}在{addr}买菜时钱包被扒手偷走", "G"),
            ("{addr}租户报告家中{item}失窃，窗户有被撬痕迹", "G"),
            ("{time}{addr}快递柜里的包裹接连被人拿走，怀疑有人专门偷快递", "G"),
            ("thief snatched a phone at {en_addr} and ran toward the station", "G"),
            ("{who}在{addr}正在撬车门偷东西，快来人", "U"),
        ],
        "heldout": [
            ("{time}{addr}停在路边的{item}不翼而飞", "G"),
            ("{addr}一家店铺的收银箱被人撬开，钱没了", "G"),
            ("{addr}有人趁主人不在溜进院子偷走了鸡鸭", "G"),
            ("{who}现在正在{addr}偷车，我在远处看着", "U"),
            ("somebody took my {item_en} from the basket at {en_addr}", "G"),
        ],
    },
    "telecom_fraud": {
        "train": [
            ("{addr}居民接到自称公安的电话，说他涉嫌洗钱，要求把钱转到安全账户，已经转了{amount}元", "U"),
            ("{elder}被人冒充儿子打电话借钱，正准备去银行转账，请民警马上去{addr}拦一下", "U"),
            ("{addr}一名大学生做刷单兼职被骗{amount}元", "U"),
            ("居民反映在网上投资理财平台被骗{amount}，平台已经登不上了", "U"),
            ("{addr}有人收到中奖短信，对方要求先交手续费，疑似诈骗", "U"),
            ("{time}有人冒充客服说快递丢了要理赔，骗走验证码，卡里{amount}元被转走", "U"),
            ("杀猪盘：{addr}一位女士网恋对象让她在平台充值，已投入{amount}", "U"),
            ("{addr}老人被骗买保健品，花了{amount}元", "U"),
            ("Resident at {en_addr} got a call from fake police asking to transfer money, possible scam", "U"),
            ("scam alert: {en_addr}, an elderly man transferred {amount} yuan to a 'safe account'", "U"),
            ("{addr}居民被诈骗 scam 了{amount}块，对方说是贷款平台", "U"),
            ("{addr}居民接到可疑电话称办理贷款需要先交保证金，他没有转账，想确认是不是诈骗", "G"),
            ("网贷诈骗：{time}{addr}一名青年被以解冻账户为由骗了{amount}", "U"),
            ("{addr}一名退休教师被自称检察院的人要求配合调查，已转账{amount}元", "U"),
            ("{time}{addr}有人通过游戏账号交易被骗{amount}，对方把他拉黑了", "U"),
            ("fraud: someone posing as a bank clerk asked a resident at {en_addr} for the SMS code", "U"),
            ("{elder}正在{addr}的ATM机前按对方电话指示操作，疑似被骗，请尽快", "U"),
        ],
        "heldout": [
            ("{addr}一位大姐说有人打电话自称社保局，让她下载一个APP共享屏幕", "U"),
            ("{time}{addr}居民在二手平台卖东西，买家发链接骗他输入银行卡密码，损失{amount}", "U"),
            ("{elder}接到“孙子”电话说打架被抓要交保释金，正要去汇款", "U"),
            ("a tenant at {en_addr} lost {amount} yuan to an online 'investment advisor'", "U"),
        ],
    },
    "violence": {
        "train": [
            ("{addr}有人打架，{who}拿着棍子，有人头破血流", "U"),
            ("{time}{addr}烧烤摊两伙人斗殴，场面混乱", "U"),
            ("{addr}家暴，邻居听到女的在哭喊救命", "U"),
            ("{who}在{addr}持刀行凶，快来！", "U"),
            ("{addr}网吧门口一群人群殴，已经有人倒地", "U"),
            ("fight outside {en_addr}, several men beating one guy", "U"),
            ("{addr} 有人打人 someone is being attacked", "U"),
            ("{addr}一名男子殴打他的妻子，孩子在旁边哭", "U"),
            ("🔪 {addr} 有人拿刀", "U"),
            ("{addr}酒后闹事，{who}扭打在一起，有人被打伤", "U"),
            ("{time}{addr}有人拳打脚踢一名外卖员", "U"),
            ("assault at {en_addr}: a man hit a woman and is still there", "U"),
        ],
        "heldout": [
            ("{addr}有人持棍追打路人", "U"),
            ("{time}{addr}饭店里有人砸酒瓶互殴", "U"),
            ("{addr}丈夫又在打老婆，邻居说听到很大的撞击声", "U"),
            ("two men with knives at {en_addr}", "U"),
        ],
    },
    "fire": {
        "train": [
            ("{addr}着火了，浓烟很大，楼上还有人", "U"),
            ("{time}{addr}一楼商铺起火", "U"),
            ("{addr}楼道里电动车充电起火，火苗窜得很高", "U"),
            ("{addr}厨房冒烟，闻到烧焦味，家里没人", "U"),
            ("🔥🔥{addr}", "U"),
            ("fire at {en_addr}, black smoke coming out of a window", "U"),
            ("{addr}垃圾堆烧起来了，火势在蔓延", "U"),
            ("{addr} 失火 flames visible", "U"),
            ("{addr}一户人家阳台明火，窗户往外冒黑烟", "U"),
            ("{time}{addr}山上有火，烧到林子边上了", "U"),
            ("smoke and flames from a shop at {en_addr}", "U"),
        ],
        "heldout": [
            ("{addr}配电箱冒火花，已经烧着了", "U"),
            ("{time}{addr}有一辆车自燃", "U"),
            ("{addr}仓库那边黑烟滚滚，好像着了", "U"),
            ("house on fire near {en_addr}!!", "U"),
        ],
    },
    "medical_emergency": {
        "train": [
            ("{addr}有人晕倒在路边，不省人事", "U"),
            ("{elder}在家中突然昏迷，家属已经打120，请民警协助开门，地址{addr}", "U"),
            ("{addr}一名男子倒地抽搐，口吐白沫", "U"),
            ("{addr}菜市场有人心脏病发作，呼吸困难", "U"),
            ("a man collapsed at {en_addr} and is not breathing", "U"),
            ("{addr}老人摔倒后晕过去了，叫不醒", "U"),
            ("someone fainted at {en_addr}, need an ambulance", "U"),
            ("{time}{addr}公交站一位女士突然倒下，脸色发紫", "U"),
            ("{addr}健身房有人运动后失去意识，急需急救", "U"),
            ("old lady had a seizure at {en_addr}", "U"),
        ],
        "heldout": [
            ("{addr}一位老人坐在路边喘不上气，嘴唇发白", "U"),
            ("{time}{addr}工地工人中暑晕倒了", "U"),
            ("{addr}有个孕妇突然肚子剧痛倒在地上", "U"),
            ("a man is lying on the ground at {en_addr}, unresponsive", "U"),
        ],
    },
    "traffic_accident": {
        "train": [
            ("{addr}发生车祸，一辆电动车被小车撞了，骑车人躺在地上", "U"),
            ("{time}{addr}两车追尾，堵住了路口", "U"),
            ("{addr}路口有人被车撞了，流了很多血", "U"),
            ("{addr}货车侧翻，货物撒了一地", "U"),
            ("car crash at {en_addr}, one driver hurt", "U"),
            ("{addr}交通事故，两辆车刮蹭，司机在吵架", "U"),
            ("{addr} 撞车了 traffic accident", "U"),
            ("{time}{addr}一辆三轮车和摩托车相撞，有人受伤", "U"),
            ("{addr}学生过马路被小轿车撞倒", "U"),
            ("collision between a bus and a scooter at {en_addr}", "U"),
        ],
        "heldout": [
            ("{addr}电动车和货车撞了，骑车的人腿压在车下面", "U"),
            ("{time}{addr}小车撞上护栏，车头全瘪了", "U"),
            ("{addr}路口出交通事故了，一个老人被撞倒在地", "U"),
            ("a taxi hit a pedestrian at {en_addr}", "U"),
        ],
    },
    "missing_person": {
        "train": [
            ("{elder}{time}出门后没回家，家属在{addr}附近找不到人", "U"),
            ("{child}在{addr}走失了，穿红色衣服", "U"),
            ("{addr}一名初中生两天没回家，手机联系不上", "U"),
            ("my {child_en} is missing near {en_addr}", "U"),
            ("{elder}有老年痴呆，从{addr}走丢了", "U"),
            ("{addr}居民报告家人失联一天了", "U"),
            ("{time}{child}在{addr}商场里不见了，家长急坏了", "U"),
            ("{elder}早上出去买菜到现在还没回来，{addr}", "U"),
            ("elderly father wandered off from {en_addr}", "U"),
        ],
        "heldout": [
            ("{child}放学没有回家，家长在{addr}一带到处找", "U"),
            ("{elder}从医院出来后就联系不上了，最后出现在{addr}", "U"),
            ("{addr}一名智力障碍青年离家出走，至今未归", "U"),
            ("my grandmother did not come home, last seen at {en_addr}", "U"),
        ],
    },
    "safety_hazard": {
        "train": [
            ("{addr}楼道里有人飞线充电，电线乱拉，存在隐患", "G"),
            ("{addr}井盖缺失，晚上很危险", "G"),
            ("{addr}消防通道被私家车堵塞", "G"),
            ("{addr}老房子墙体出现裂缝，担心坍塌", "G"),
            ("{addr}闻到很浓的燃气味，怀疑燃气泄漏，楼里还有老人", "U"),
            ("{addr}外墙瓷砖松动脱落，砸到楼下人行道", "G"),
            ("exposed wires hanging at {en_addr}, safety hazard", "G"),
            ("fire exit blocked at {en_addr} by piles of boxes", "G"),
            ("{addr}出租屋私拉电线，一屋住了十几个人", "G"),
            ("{addr}广告牌松动，刮风时摇晃", "G"),
            ("{addr}煤气泄漏！现在味道很大", "U"),
            ("{addr}地下室的安全出口被锁死了", "G"),
            ("{time}{addr}路边的电线杆倾斜，随时可能倒下", "G"),
            ("gas leak smell in the stairwell at {en_addr}", "U"),
            ("{addr}危房里还有人居住，屋顶已经塌了一角", "G"),
        ],
        "heldout": [
            ("{addr}楼顶的水箱锈穿了，随时可能掉下来", "G"),
            ("{addr}小区的电动车充电桩线路裸露", "G"),
            ("{time}{addr}燃气管道被挖断了，味道很重", "U"),
            ("{addr}一家出租房把楼梯间改成了住人的隔间，堵住了逃生路", "G"),
            ("a broken balcony railing at {en_addr} could fall on people", "G"),
        ],
    },
    "consultation": {
        "train": [
            ("请问身份证丢了在哪里补办？{addr}的居民问", "G"),
            ("居民咨询居住证怎么办理，需要什么材料", "G"),
            ("{addr}居民想咨询孩子上户口的流程", "G"),
            ("咨询：无犯罪记录证明在哪里开", "G"),
            ("how do I apply for a residence permit? resident of {en_addr} asking", "G"),
            ("居民问户口迁移需要带哪些证件", "G"),
            ("请问临时身份证多久能办好", "G"),
            ("{addr}租户咨询办理居住登记要房东签字吗", "G"),
            ("id card renewal, what documents do I need", "G"),
            ("老人想问一下护照过期了怎么换，{addr}", "G"),
            ("居民询问落户政策，大学毕业生能不能直接迁户口", "G"),
            ("where can I get a certificate of no criminal record", "G"),
        ],
        "heldout": [
            ("想问一下外地户口在这边怎么办理暂住手续", "G"),
            ("{addr}居民打听新生儿落户要准备什么", "G"),
            ("身份证快到期了，可以提前换吗", "G"),
            ("how long does it take to get a new hukou booklet?", "G"),
        ],
    },
    "mediation_request": {
        "train": [
            ("{addr}工地{who}被拖欠工资{amount}元，包工头联系不上，请求调解", "G"),
            ("租客和房东因为押金问题闹矛盾，{addr}，申请调解", "G"),
            ("{addr}业主和物业因为物业费纠纷，希望社区协调", "G"),
            ("{addr}一对兄弟因为老人赡养问题起矛盾，请求司法所调解", "G"),
            ("landlord at {en_addr} refuses to return the deposit, tenant asks for mediation", "G"),
            ("{addr}装修合同纠纷，装修公司不肯赔偿", "G"),
            ("讨薪：{addr}餐馆员工两个月工资没发", "G"),
            ("{addr} 房东 tenant 押金 dispute，求协调", "G"),
            ("{addr}夫妻离婚后孩子抚养费谈不拢，想请调解员帮忙", "G"),
            ("{time}{addr}快递员和公司为了罚款争执，要求协调", "G"),
            ("workers at {en_addr} site unpaid for 3 months, asking for mediation", "G"),
        ],
        "heldout": [
            ("{addr}员工被辞退没拿到补偿金，老板不见人，想请人协调", "G"),
            ("{time}{addr}两家合伙开店散伙，分钱的事谈崩了，请司法所调解", "G"),
            ("{addr}租房到期房东扣了全部押金，租客不服", "G"),
            ("a worker at {en_addr} has not been paid for two months and wants help to get the wages", "G"),
        ],
    },
    "environment": {
        "train": [
            ("{addr}垃圾堆放好几天没人清理，很臭", "G"),
            ("{addr}下水道堵塞，污水流到路面上", "G"),
            ("{addr}餐馆油烟直排，熏得楼上没法开窗", "G"),
            ("{addr}有人乱扔建筑垃圾", "G"),
            ("rubbish piling up at {en_addr}, it stinks", "G"),
            ("{addr}河道里漂着死鱼，有异味", "G"),
            ("{addr}小区积水严重，下雨后一直排不掉", "G"),
            ("{addr} garbage 没人收，环境卫生太差", "G"),
            ("{addr}养殖场粪便污染了旁边的水沟", "G"),
            ("{time}{addr}工厂排放黑水进河里", "G"),
            ("sewage overflowing on the street near {en_addr}", "G"),
        ],
        "heldout": [
            ("{addr}化粪池满溢，整条街都是味道", "G"),
            ("{time}{addr}有人焚烧垃圾，烟熏得人难受", "G"),
            ("{addr}路边堆满了装修废料没人拉走", "G"),
            ("dead rats and rubbish behind the restaurant at {en_addr}", "G"),
        ],
    },
    "civil_affairs": {
        "train": [
            ("{addr}独居老人生活困难，想申请低保", "G"),
            ("{addr}困难家庭孩子上学需要救助", "G"),
            ("{addr}桥洞下有流浪人员，天冷了需要救助", "G"),
            ("{addr}残疾人申请补贴不知道找谁", "G"),
            ("elderly living alone at {en_addr} needs welfare support", "G"),
            ("{addr}孤寡老人没人照顾，想进养老院", "G"),
            ("{addr}空巢老人家里没饭吃了", "G"),
            ("{addr}特困户房子漏雨，申请临时救助", "G"),
            ("{time}{addr}发现一名流浪的精神病人，需要民政帮忙安置", "G"),
            ("disabled resident at {en_addr} asks about the living allowance", "G"),
        ],
        "heldout": [
            ("{addr}一位老人儿女都在外地，腿脚不便，想申请上门照护", "G"),
            ("{addr}单亲妈妈失业，家里揭不开锅，问能不能办低保", "G"),
            ("{time}{addr}发现一名流浪老人睡在公园长椅上", "G"),
            ("elderly man at {en_addr} lives alone and has no heating, needs help from civil affairs", "G"),
        ],
    },
    "market_safety": {
        "train": [
            ("{addr}超市卖过期食品", "G"),
            ("{addr}有无证经营的小作坊在做食品", "G"),
            ("{addr}餐馆卫生很差，吃完拉肚子，怀疑食物中毒", "G"),
            ("{addr}商店卖假货，冒充名牌", "G"),
            ("expired food on the shelves at {en_addr}", "G"),
            ("{addr}菜市场摊贩缺斤少两", "G"),
            ("{addr}小卖部卖三无产品给学生", "G"),
            ("{time}{addr}买的面包发霉了，商家不承认", "G"),
            ("{addr}药店没有执照在卖处方药", "G"),
            ("counterfeit liquor sold at {en_addr}", "G"),
        ],
        "heldout": [
            ("{addr}早餐店用地沟油，吃了胃不舒服", "G"),
            ("{time}{addr}超市的肉闻着不新鲜，标签日期被改过", "G"),
            ("{addr}路边摊卖的奶粉没有中文标签", "G"),
            ("fake brand cosmetics sold without a licence at {en_addr}", "G"),
        ],
    },
    "noise": {
        "train": [
            ("{addr}装修噪音太大，晚上十点还在施工", "G"),
            ("{addr}广场舞音响太吵，影响休息", "G"),
            ("{addr}夜宵摊喧哗到凌晨", "G"),
            ("{addr}工地夜间施工扰民", "G"),
            ("loud music from a bar at {en_addr} every night", "G"),
            ("{addr}有人用喇叭叫卖，噪音很大", "G"),
            ("{addr}楼上邻居装修，电钻声从早响到晚", "G"),
            ("{addr} too noisy 施工 太吵了", "G"),
            ("{time}{addr}KTV声音太大，吵得睡不着", "G"),
            ("{addr}隔壁工厂机器轰鸣，半夜也不停", "G"),
            ("construction noise at {en_addr} starts at 5 am", "G"),
        ],
        "heldout": [
            ("{addr}楼下酒吧每晚放音乐到两点，睡不着觉", "G"),
            ("{time}{addr}搅拌车一直在响，晚上也不停工", "G"),
            ("{addr}有人在小区里练鼓，吵死了", "G"),
            ("neighbours' dog barks all night at {en_addr}, too loud", "G"),
        ],
    },
    "other": {
        "train": [
            ("{addr}路灯坏了好几盏", "G"),
            ("{addr}小区里流浪猫太多", "G"),
            ("{addr}有人发小广告", "G"),
            ("{addr}公交站的座椅坏了", "G"),
            ("a lost dog is wandering around {en_addr}", "G"),
            ("{addr}快递柜坏了打不开", "G"),
            ("{addr}树枝挡住了路牌", "G"),
            ("{time}{addr}居民建议增加健身器材", "G"),
            ("the street sign at {en_addr} is missing", "G"),
        ],
        "heldout": [
            ("{addr}公共厕所的门锁坏了", "G"),
            ("{addr}居民希望小区增设一个快递驿站", "G"),
            ("{time}{addr}有只鸟受伤掉在路边", "G"),
            ("the bus timetable at {en_addr} is out of date", "G"),
        ],
    },
}

_ITEM_EN = {"电动车": "e-bike", "手机": "phone", "钱包": "wallet", "自行车": "bicycle", "电瓶": "battery",
            "快递": "parcel", "笔记本电脑": "laptop", "摩托车": "motorbike", "金项链": "gold necklace", "背包": "backpack"}
_CHILD_EN = ["son", "daughter", "little boy", "6-year-old girl"]

_PREFIXES_ZH = ["", "", "", "网格员巡查发现：", "居民反映，", "【上报】", "紧急情况 ", "报告，", "接群众电话："]
_SUFFIXES_ZH = ["", "", "", "。", "，请尽快处理", "，麻烦派人来看看", "！", "，谢谢", " 🙏", "。已拍照上传", "，现场有照片"]
# Typos from pinyin input: a same-sounding character or a dropped one.
_TYPOS = {"的": "得", "在": "再", "已": "以", "经": "径", "报": "抱", "区": "去", "里": "理", "到": "倒", "话": "化"}


def _roughen(text: str, rng: random.Random, english: bool) -> str:
    """Make a clean template read like a phone message: prefixes, typos, spacing, punctuation."""
    if not english:
        text = rng.choice(_PREFIXES_ZH) + text + rng.choice(_SUFFIXES_ZH)
        if rng.random() < 0.15:
            typo_sites = [i for i, ch in enumerate(text) if ch in _TYPOS]
            if typo_sites:
                i = rng.choice(typo_sites)
                text = text[:i] + _TYPOS[text[i]] + text[i + 1 :]
        if rng.random() < 0.1:
            text = text.replace("，", " ")
        if rng.random() < 0.1:
            text = text.replace("，", ",")
    else:
        if rng.random() < 0.3:
            text = text.lower()
        if rng.random() < 0.2:
            text = text + rng.choice([" pls help", ". thanks", "!!", " asap"])
    return text


def _fill(template: str, slots: dict[str, list[str]], rng: random.Random) -> str:
    item = rng.choice(slots["item"])
    values = {key: rng.choice(pool) for key, pool in slots.items()}
    values["item"] = item
    values["item_en"] = _ITEM_EN[item]
    values["child_en"] = rng.choice(_CHILD_EN)
    return template.format(**values)


def generate(seed: int = SEED, total: int = TOTAL) -> list[dict]:
    """Compose the generated reports: {id, text, category, urgency, split, template}, deterministic.

    The pools are still drawn apart (same seed, same texts as when the `heldout` pool was held
    out), but every report is training data now."""
    rng = random.Random(seed)
    records: list[dict] = []
    seen: set[str] = set()
    for category, share in SHARES.items():
        count = round(total * share)
        heldout = round(count * HELDOUT_SHARE)
        for split, n in (("train", count - heldout), ("heldout", heldout)):
            templates = TEMPLATES[category][split]
            made, attempts = 0, 0
            while made < n and attempts < n * 50:
                attempts += 1
                # Cycling through the templates keeps every one of them represented.
                template_index = (attempts - 1) % len(templates)
                template, urgency = templates[template_index]
                english = template[0].isascii() and template[0].isalpha()
                text = _roughen(_fill(template, SLOTS[split], rng), rng, english)
                if text in seen:
                    continue
                seen.add(text)
                made += 1
                records.append(
                    {
                        "id": f"{category}-{split}-{made:03d}",
                        "text": text,
                        "category": category,
                        "urgency": "urgent" if urgency == "U" else "general",
                        "split": "train",
                        # Lets development cross-validation hold whole templates out.
                        "template": f"{category}/{split}/{template_index}",
                    }
                )
    return records


def handwritten(path: Path = HANDWRITTEN_PATH) -> list[dict]:
    """The hand-written training reports, each its own cross-validation group."""
    with path.open(encoding="utf-8") as source:
        rows = [json.loads(line) for line in source if line.strip()]
    return [{**row, "split": "train", "template": f"hand/{row['id']}"} for row in rows]


def main() -> None:
    """Write the corpus as JSON lines."""
    records = generate() + handwritten()
    texts = [r["text"] for r in records]
    if len(set(texts)) != len(texts):
        raise SystemExit("duplicate report texts in the corpus")
    with CORPUS_PATH.open("w", encoding="utf-8") as out:
        for record in records:
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
    print(f"wrote {len(records)} reports to {CORPUS_PATH}")


if __name__ == "__main__":
    main()
